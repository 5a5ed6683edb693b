//! Errors of the IPVS crate. Kernel answers are classified once, here: callers
//! match on variants ([`IpvsError::is_not_found`], [`IpvsError::is_exists`]),
//! never on text.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::types::{Operation, ServiceKey};

/// What was being asked of the kernel; part of every error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Looking up the "IPVS" generic netlink family.
    ResolveFamily,
    /// `IPVS_CMD_NEW_SERVICE`.
    AddService,
    /// `IPVS_CMD_SET_SERVICE`.
    UpdateService,
    /// `IPVS_CMD_DEL_SERVICE`.
    DeleteService,
    /// `IPVS_CMD_GET_SERVICE` dump.
    ListServices,
    /// `IPVS_CMD_NEW_DEST`.
    AddRealServer,
    /// `IPVS_CMD_SET_DEST`.
    UpdateRealServer,
    /// `IPVS_CMD_DEL_DEST`.
    DeleteRealServer,
    /// `IPVS_CMD_GET_DEST` dump.
    ListRealServers,
    /// `IPVS_CMD_FLUSH`.
    Flush,
    /// `IPVS_CMD_GET_CONFIG`.
    GetTimeouts,
    /// `IPVS_CMD_SET_CONFIG`.
    SetTimeouts,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ResolveFamily => "resolve generic netlink family IPVS",
            Self::AddService => "add service",
            Self::UpdateService => "update service",
            Self::DeleteService => "delete service",
            Self::ListServices => "list services",
            Self::AddRealServer => "add real server",
            Self::UpdateRealServer => "update real server",
            Self::DeleteRealServer => "delete real server",
            Self::ListRealServers => "list real servers",
            Self::Flush => "flush",
            Self::GetTimeouts => "get timeouts",
            Self::SetTimeouts => "set timeouts",
        })
    }
}

/// What a request was about: nothing, a service, or a real server of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The whole table (flush, timeouts, the service dump).
    Table,
    /// One virtual server.
    Service(ServiceKey),
    /// One real server of a virtual server.
    RealServer(ServiceKey, SocketAddr),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Table => f.write_str("(all)"),
            Self::Service(s) => write!(f, "{s}"),
            Self::RealServer(s, rs) => write!(f, "{s} -> {rs}"),
        }
    }
}

/// An IPVS operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The kernel has no "IPVS" generic netlink family.
    #[error(
        "IPVS is not available: the kernel has no \"IPVS\" generic netlink family \
         (the ip_vs module is not loaded; try `modprobe ip_vs`)"
    )]
    NotAvailable,
    /// The netlink socket could not be opened, or sending/receiving failed.
    #[error("IPVS netlink socket: {operation}: {source}")]
    Socket {
        /// What was being done (`open`, `bind`, `send`, `receive`, ...).
        operation: &'static str,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// The kernel did not answer in time.
    #[error("IPVS {command}: no answer from the kernel within {seconds} s")]
    Timeout {
        /// The request waiting for an answer.
        command: Command,
        /// The receive timeout.
        seconds: u64,
    },
    /// Adding a virtual server that exists (EEXIST).
    #[error("IPVS add service {service}: the service already exists")]
    ServiceExists {
        /// The service.
        service: ServiceKey,
    },
    /// The virtual server does not exist (ESRCH).
    #[error("IPVS {command} {target}: no such service")]
    ServiceNotFound {
        /// The request.
        command: Command,
        /// The service, or the real server of the missing service.
        target: Target,
    },
    /// The kernel has no scheduler of that name and could not load it (ENOENT).
    #[error(
        "IPVS {command} {service}: unknown scheduler {scheduler:?} (is ip_vs_{scheduler} available?)"
    )]
    SchedulerNotFound {
        /// The request.
        command: Command,
        /// The service.
        service: ServiceKey,
        /// The scheduler asked for.
        scheduler: String,
    },
    /// Adding a real server that the service already has (EEXIST).
    #[error("IPVS add real server {service} -> {real_server}: the real server already exists")]
    RealServerExists {
        /// The service.
        service: ServiceKey,
        /// The real server's address and port.
        real_server: SocketAddr,
    },
    /// The service has no such real server (ENOENT).
    #[error("IPVS {command} {service} -> {real_server}: no such real server")]
    RealServerNotFound {
        /// The request.
        command: Command,
        /// The service.
        service: ServiceKey,
        /// The real server's address and port.
        real_server: SocketAddr,
    },
    /// Any other refusal by the kernel, with its errno and, when it sent one, its
    /// extended-ACK message.
    #[error("IPVS {command} {target}: {source}{}", message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel {
        /// The request.
        command: Command,
        /// What it was about.
        target: Target,
        /// The kernel's extended-ACK message, if any.
        message: Option<String>,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The request was not sent because it cannot be valid (detected before
    /// asking the kernel).
    #[error("IPVS {command} {target}: {reason}")]
    Invalid {
        /// The request.
        command: Command,
        /// What it was about.
        target: Target,
        /// Why it is invalid.
        reason: String,
    },
    /// The kernel's answer could not be decoded.
    #[error("IPVS {command}: malformed answer from the kernel: {detail}")]
    Decode {
        /// The request being answered.
        command: Command,
        /// What was wrong.
        detail: String,
    },
    /// The request was sent but its acknowledgement was dropped (the socket's
    /// receive buffer overflowed): whether it took effect is unknown.
    #[error("IPVS {command} {target}: acknowledgement lost, outcome unknown")]
    AckLost {
        /// The request.
        command: Command,
        /// What it was about.
        target: Target,
    },
}

impl IpvsError {
    /// Classifies the kernel's refusal (`errno > 0`) of `operation`, with errnos
    /// as `ip_vs_genl_set_cmd` and its callees give them: ESRCH for a missing
    /// service, EEXIST for an existing service or real server, ENOENT for a
    /// missing real server or (on add/update service) an unknown scheduler.
    pub fn refused(operation: &Operation, errno: i32, message: Option<String>) -> Self {
        let command = operation.command();
        let service = operation.service();
        match (operation, errno) {
            (_, libc::ESRCH) => Self::ServiceNotFound {
                command,
                target: operation.target(),
            },
            (Operation::AddService(_), libc::EEXIST) => Self::ServiceExists { service },
            (Operation::AddService(vs) | Operation::UpdateService(vs), libc::ENOENT) => {
                Self::SchedulerNotFound {
                    command,
                    service,
                    scheduler: vs.scheduler.clone(),
                }
            }
            (Operation::AddRealServer(_, rs), libc::EEXIST) => Self::RealServerExists {
                service,
                real_server: rs.socket_addr(),
            },
            (
                Operation::UpdateRealServer(_, rs) | Operation::DeleteRealServer(_, rs),
                libc::ENOENT,
            ) => Self::RealServerNotFound {
                command,
                service,
                real_server: rs.socket_addr(),
            },
            _ => Self::Kernel {
                command,
                target: operation.target(),
                message,
                source: io::Error::from_raw_os_error(errno),
            },
        }
    }

    /// The thing (service or real server) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::ServiceNotFound { .. } | Self::RealServerNotFound { .. }
        )
    }

    /// The thing (service or real server) exists already.
    pub fn is_exists(&self) -> bool {
        matches!(
            self,
            Self::ServiceExists { .. } | Self::RealServerExists { .. }
        )
    }

    /// The system's errno, when the error carries one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Socket { source, .. } | Self::Kernel { source, .. } => source.raw_os_error(),
            Self::ServiceExists { .. } | Self::RealServerExists { .. } => Some(libc::EEXIST),
            Self::ServiceNotFound { .. } => Some(libc::ESRCH),
            Self::RealServerNotFound { .. } | Self::SchedulerNotFound { .. } => Some(libc::ENOENT),
            _ => None,
        }
    }
}

impl Operation {
    /// The kernel command the operation is sent as.
    pub fn command(&self) -> Command {
        match self {
            Self::AddService(_) => Command::AddService,
            Self::UpdateService(_) => Command::UpdateService,
            Self::DeleteService(_) => Command::DeleteService,
            Self::AddRealServer(..) => Command::AddRealServer,
            Self::UpdateRealServer(..) => Command::UpdateRealServer,
            Self::DeleteRealServer(..) => Command::DeleteRealServer,
        }
    }

    /// What the operation is about, for errors.
    pub fn target(&self) -> Target {
        match self.real_server() {
            Some(rs) => Target::RealServer(self.service(), rs.socket_addr()),
            None => Target::Service(self.service()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::types::{Protocol, RealServer, VirtualServer};

    fn vs() -> VirtualServer {
        VirtualServer::new("10.96.0.1".parse().unwrap(), Protocol::Tcp, 80, "rr")
    }

    fn rs() -> RealServer {
        RealServer::new("10.1.0.1".parse().unwrap(), 8080, 1)
    }

    /// Each errno becomes the variant a caller can match on, and the message
    /// names the command, the service and the real server.
    #[test]
    fn classification() {
        let key = vs().key();
        let cases: Vec<(Operation, i32, &str)> = vec![
            (
                Operation::AddService(vs()),
                libc::EEXIST,
                "IPVS add service TCP 10.96.0.1:80: the service already exists",
            ),
            (
                Operation::AddService(vs()),
                libc::ENOENT,
                "IPVS add service TCP 10.96.0.1:80: unknown scheduler \"rr\" (is ip_vs_rr available?)",
            ),
            (
                Operation::DeleteService(key),
                libc::ESRCH,
                "IPVS delete service TCP 10.96.0.1:80: no such service",
            ),
            (
                Operation::AddRealServer(key, rs()),
                libc::ESRCH,
                "IPVS add real server TCP 10.96.0.1:80 -> 10.1.0.1:8080: no such service",
            ),
            (
                Operation::AddRealServer(key, rs()),
                libc::EEXIST,
                "IPVS add real server TCP 10.96.0.1:80 -> 10.1.0.1:8080: the real server already exists",
            ),
            (
                Operation::DeleteRealServer(key, rs()),
                libc::ENOENT,
                "IPVS delete real server TCP 10.96.0.1:80 -> 10.1.0.1:8080: no such real server",
            ),
            (
                Operation::UpdateRealServer(key, rs()),
                libc::ERANGE,
                "IPVS update real server TCP 10.96.0.1:80 -> 10.1.0.1:8080: Numerical result out of range (os error 34)",
            ),
        ];
        for (operation, errno, text) in cases {
            let e = IpvsError::refused(&operation, errno, None);
            assert_eq!(e.to_string(), text);
            assert_eq!(e.raw_os_error(), Some(errno));
        }
        let e = IpvsError::refused(&Operation::DeleteService(key), libc::ESRCH, None);
        assert!(e.is_not_found() && !e.is_exists());
        let e = IpvsError::refused(&Operation::AddService(vs()), libc::EEXIST, None);
        assert!(e.is_exists() && !e.is_not_found());
        let e = IpvsError::refused(
            &Operation::AddService(vs()),
            libc::EINVAL,
            Some("bad".into()),
        );
        assert!(e.to_string().ends_with("(os error 22) (bad)"), "{e}");
    }
}
