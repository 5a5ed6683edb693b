//! Errors of the conntrack crate.

use std::io;

/// A conntrack operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// The netlink socket could not be opened, or sending/receiving failed.
    #[error("conntrack netlink socket: {operation}: {source}")]
    Socket {
        /// What was being done (`open`, `bind`, `send`, `receive`, ...).
        operation: &'static str,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused requests (other than "no such entry").
    #[error(
        "conntrack {operation}: kernel refused {failed} request(s) after {done} succeeded: {source}"
    )]
    Kernel {
        /// `dump`, `delete` or `create`.
        operation: &'static str,
        /// Requests that succeeded before the error was reported (entries
        /// received, for a dump).
        done: usize,
        /// Requests the kernel refused in the failing batch.
        failed: usize,
        /// The kernel's error (the first one of the batch).
        #[source]
        source: io::Error,
    },
    /// The kernel did not answer in time.
    #[error("conntrack netlink socket: no answer from the kernel within {seconds} s")]
    Timeout {
        /// The receive timeout.
        seconds: u64,
    },
    /// A procfs/sysfs file could not be read or held no number.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl ConntrackError {
    /// The kernel's errno, when the error carries one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Socket { source, .. } | Self::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
