//! The IPVS table as the proxier sees it: dump services, dump a service's real
//! servers with their counters, apply a batch of changes. [`Ipvs`] is the kernel's;
//! [`FakeTable`] keeps it in memory for the proxier's unit tests (the kernel's runs
//! only in a VM here, where `tests/kernel.rs` and the scenario matrix use it).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::error::{IpvsError, Target};
use crate::netlink::{BatchReport, Ipvs};
use crate::types::{Operation, RealServer, RealServerStats, ServiceKey, VirtualServer};

/// An IPVS table.
pub trait IpvsTable: Send {
    /// Every TCP, UDP and SCTP virtual server.
    fn services(&mut self) -> Result<Vec<VirtualServer>, IpvsError>;
    /// A service's real servers with their counters (none if it does not exist).
    fn real_servers(
        &mut self,
        key: &ServiceKey,
    ) -> Result<Vec<(RealServer, RealServerStats)>, IpvsError>;
    /// Applies `operations` in order; each failure is reported, the rest go on.
    fn apply(&mut self, operations: &[Operation]) -> Result<BatchReport, IpvsError>;
}

impl IpvsTable for Ipvs {
    fn services(&mut self) -> Result<Vec<VirtualServer>, IpvsError> {
        Ipvs::services(self)
    }

    fn real_servers(
        &mut self,
        key: &ServiceKey,
    ) -> Result<Vec<(RealServer, RealServerStats)>, IpvsError> {
        Ipvs::real_servers(self, key)
    }

    fn apply(&mut self, operations: &[Operation]) -> Result<BatchReport, IpvsError> {
        Ipvs::apply(self, operations)
    }
}

/// The real servers of one fake virtual server, by address, with their counters.
pub type FakeRealServers = BTreeMap<SocketAddr, (RealServer, RealServerStats)>;

/// An in-memory IPVS table with the kernel's answers to conflicting operations
/// (exists / not found), and connection counters a test sets.
#[derive(Clone, Debug, Default)]
pub struct FakeTable {
    /// Virtual servers with their real servers and counters.
    pub services: BTreeMap<ServiceKey, (VirtualServer, FakeRealServers)>,
    /// Every operation applied, in order.
    pub log: Vec<Operation>,
}

impl FakeTable {
    /// Sets a real server's counters (what the kernel would count).
    pub fn set_stats(&mut self, key: &ServiceKey, rs: SocketAddr, stats: RealServerStats) {
        if let Some((_, reals)) = self.services.get_mut(key)
            && let Some(entry) = reals.get_mut(&rs)
        {
            entry.1 = stats;
        }
    }

    /// The real servers of a service as (address, weight), sorted.
    pub fn weights(&self, key: &ServiceKey) -> Vec<(SocketAddr, i32)> {
        self.services
            .get(key)
            .map(|(_, r)| {
                r.values()
                    .map(|(rs, _)| (rs.socket_addr(), rs.weight))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn one(&mut self, op: &Operation) -> Result<(), IpvsError> {
        let key = op.service();
        let command = op.command();
        let missing = || IpvsError::ServiceNotFound {
            command,
            target: Target::Service(key),
        };
        match op {
            Operation::AddService(vs) => {
                if self.services.contains_key(&key) {
                    return Err(IpvsError::ServiceExists { service: key });
                }
                self.services.insert(key, (vs.clone(), BTreeMap::new()));
            }
            Operation::UpdateService(vs) => {
                self.services.get_mut(&key).ok_or_else(missing)?.0 = vs.clone();
            }
            Operation::DeleteService(_) => {
                self.services.remove(&key).ok_or_else(missing)?;
            }
            Operation::AddRealServer(_, rs) => {
                let reals = &mut self.services.get_mut(&key).ok_or_else(missing)?.1;
                if reals.contains_key(&rs.socket_addr()) {
                    return Err(IpvsError::RealServerExists {
                        service: key,
                        real_server: rs.socket_addr(),
                    });
                }
                reals.insert(rs.socket_addr(), (rs.clone(), RealServerStats::default()));
            }
            Operation::UpdateRealServer(_, rs) | Operation::DeleteRealServer(_, rs) => {
                let reals = &mut self.services.get_mut(&key).ok_or_else(missing)?.1;
                let Some(entry) = reals.get_mut(&rs.socket_addr()) else {
                    return Err(IpvsError::RealServerNotFound {
                        command,
                        service: key,
                        real_server: rs.socket_addr(),
                    });
                };
                if matches!(op, Operation::UpdateRealServer(..)) {
                    entry.0 = rs.clone();
                } else {
                    reals.remove(&rs.socket_addr());
                }
            }
        }
        Ok(())
    }
}

impl IpvsTable for FakeTable {
    fn services(&mut self) -> Result<Vec<VirtualServer>, IpvsError> {
        Ok(self.services.values().map(|(vs, _)| vs.clone()).collect())
    }

    fn real_servers(
        &mut self,
        key: &ServiceKey,
    ) -> Result<Vec<(RealServer, RealServerStats)>, IpvsError> {
        Ok(self
            .services
            .get(key)
            .map(|(_, r)| r.values().cloned().collect())
            .unwrap_or_default())
    }

    fn apply(&mut self, operations: &[Operation]) -> Result<BatchReport, IpvsError> {
        let mut report = BatchReport::default();
        for (i, op) in operations.iter().enumerate() {
            self.log.push(op.clone());
            match self.one(op) {
                Ok(()) => report.done += 1,
                Err(e) => report.failures.push((i, e)),
            }
        }
        Ok(report)
    }
}
