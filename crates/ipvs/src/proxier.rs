//! IPVS mode of one family across syncs: plans, then brings the kernel to the
//! plan: the `kube-ipvs0` device and its addresses, the ipsets (one `ipset
//! restore`), the virtual and real servers (netlink batches), the iptables chains
//! (one `iptables-restore`), then removes what is stale.
//!
//! Incremental: a normal sync re-plans only the Services that changed
//! ([`Desired`]) and touches only the virtual servers, real servers, ipset entries
//! and addresses their change touches (the iptables rules when they differ). A
//! full sync (the first, every `syncPeriod`, after any failure) reads the kernel
//! instead (every virtual server, every real server, the ipsets, the bound
//! addresses) and repairs whatever differs, including changes made by hand.
//!
//! Graceful termination, as upstream but without its restart bugs: a removed TCP
//! real server that still has connections gets weight 0 and is deleted once its
//! counters reach zero or after [`DRAIN_LIMIT`]; UDP and SCTP real servers and idle
//! TCP ones are deleted at once. Weights are compared with the plan on every look
//! at a service, so a real server left at weight 0 by an earlier process (kubernetes
//! #92019, #108319, #131134) is set back to 1 if its endpoint is wanted, and drains
//! again (bounded from this process's start) if it is not.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use kpr_iptables::apply::{ApplyError, Iptables};
use kpr_model::{FamilyState, IpFamily, Protocol};

use crate::desired::{Delta, Desired};
use crate::error::IpvsError;
use crate::ipset::{Ipset, IpsetError};
use crate::plan::{Plan, PlanConfig};
use crate::rules::JUMPS;
use crate::sets;
use crate::table::IpvsTable;
use crate::types::{Operation, RealServer, ServiceKey, VirtualServer};

/// The name of the dummy device holding the Service addresses.
pub const DUMMY_DEVICE: &str = "kube-ipvs0";

/// How long a removed TCP real server may drain at weight 0 before it is deleted
/// with its remaining connections (upstream waits without bound).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(15 * 60);

/// The `kube-ipvs0` device and its addresses.
pub trait Interfaces: Send {
    /// Creates the dummy device if it is missing.
    fn ensure_dummy(&mut self) -> Result<(), String>;
    /// The addresses of `family` bound to the device.
    fn bound(&mut self, family: IpFamily) -> Result<BTreeSet<IpAddr>, String>;
    /// Binds `ip` (a /32 or /128) to the device.
    fn bind(&mut self, ip: IpAddr) -> Result<(), String>;
    /// Removes `ip` from the device.
    fn unbind(&mut self, ip: IpAddr) -> Result<(), String>;
}

/// A `kube-ipvs0` kept in memory, for tests.
#[derive(Clone, Debug, Default)]
pub struct FakeInterfaces {
    /// The device exists.
    pub exists: bool,
    /// Its addresses.
    pub addresses: BTreeSet<IpAddr>,
}

impl Interfaces for FakeInterfaces {
    fn ensure_dummy(&mut self) -> Result<(), String> {
        self.exists = true;
        Ok(())
    }
    fn bound(&mut self, family: IpFamily) -> Result<BTreeSet<IpAddr>, String> {
        Ok(self
            .addresses
            .iter()
            .filter(|ip| IpFamily::of(ip) == family)
            .copied()
            .collect())
    }
    fn bind(&mut self, ip: IpAddr) -> Result<(), String> {
        if !self.exists {
            return Err(format!("{DUMMY_DEVICE} does not exist"));
        }
        self.addresses.insert(ip);
        Ok(())
    }
    fn unbind(&mut self, ip: IpAddr) -> Result<(), String> {
        self.addresses.remove(&ip);
        Ok(())
    }
}

/// Why a sync failed. The kernel keeps what the last good sync left (or part of
/// this one), and the next sync is full.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// `kube-ipvs0` could not be created, read or changed.
    #[error("{DUMMY_DEVICE}: {0}")]
    Device(String),
    /// The ipsets could not be read or written.
    #[error(transparent)]
    Ipset(#[from] IpsetError),
    /// The iptables chains could not be written.
    #[error(transparent)]
    Iptables(#[from] ApplyError),
    /// The IPVS table could not be read (or the socket failed).
    #[error(transparent)]
    Ipvs(#[from] IpvsError),
    /// Some IPVS changes were refused; the rest were made.
    #[error("{count} IPVS change(s) refused, first: {first}")]
    Refused {
        /// How many.
        count: usize,
        /// The first error.
        first: String,
    },
}

/// What one sync did.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// The kernel was read and every object compared.
    pub full: bool,
    /// Nothing changed and nothing was written.
    pub skipped: bool,
    /// Services re-planned: those that changed since the last sync (every one the
    /// first time or after a change of settings).
    pub services_replanned: usize,
    /// Virtual servers whose real servers were compared.
    pub services_examined: usize,
    /// Services (by name) those virtual servers belong to.
    pub services_changed: usize,
    /// IPVS operations sent.
    pub operations: usize,
    /// Real servers draining at weight 0 after the sync.
    pub draining: usize,
    /// Bytes of ipset and iptables input written.
    pub bytes: usize,
}

/// The IPVS data plane of one family.
pub struct FamilyProxier {
    config: PlanConfig,
    exclude: Vec<IpNet>,
    table: Box<dyn IpvsTable>,
    links: Box<dyn Interfaces>,
    ipset: Ipset,
    ipt: Iptables,
    /// The plan, kept up to date Service by Service (None: plan from nothing).
    desired: Option<Desired>,
    /// The kernel holds `desired`'s plan (false: the next sync is full).
    synced: bool,
    draining: BTreeMap<(ServiceKey, SocketAddr), Instant>,
    drain_limit: Duration,
}

impl std::fmt::Debug for FamilyProxier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FamilyProxier")
            .field("family", &self.config.family)
            .field("draining", &self.draining.len())
            .finish()
    }
}

impl FamilyProxier {
    /// A proxier over these kernel handles. `exclude` are `--ipvs-exclude-cidrs`:
    /// virtual servers inside them are never deleted as stale.
    pub fn new(
        config: PlanConfig,
        exclude: Vec<IpNet>,
        table: Box<dyn IpvsTable>,
        links: Box<dyn Interfaces>,
        ipset: Ipset,
        ipt: Iptables,
    ) -> Self {
        let family = config.family;
        Self {
            config,
            exclude: exclude
                .into_iter()
                .filter(|n| IpFamily::of(&n.addr()) == family)
                .collect(),
            table,
            links,
            ipset,
            ipt,
            desired: None,
            synced: false,
            draining: BTreeMap::new(),
            drain_limit: DRAIN_LIMIT,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &PlanConfig {
        &self.config
    }

    /// Changes the settings; a change makes the next sync full.
    pub fn set_config(&mut self, config: PlanConfig) {
        if config != self.config {
            self.config = config;
            self.desired = None;
            self.synced = false;
        }
    }

    /// Changes how long removed TCP real servers drain (tests).
    pub fn set_drain_limit(&mut self, limit: Duration) {
        self.drain_limit = limit;
    }

    /// The iptables tools in use.
    pub fn iptables(&self) -> &Iptables {
        &self.ipt
    }

    /// Real servers draining now: (service, real server, since).
    pub fn draining(&self) -> Vec<(ServiceKey, SocketAddr, Instant)> {
        self.draining
            .iter()
            .map(|((k, a), t)| (*k, *a, *t))
            .collect()
    }

    /// Brings the kernel to `state`; `full` forces a read of the kernel.
    ///
    /// A partial sync re-plans only the Services that changed since the last sync
    /// ([`Desired`]) and touches only what their change touches; a full one compares
    /// the whole plan with what it reads from the kernel.
    pub fn sync(&mut self, state: &FamilyState, full: bool) -> Result<SyncReport, SyncError> {
        let now = Instant::now();
        let full = full || !self.synced;
        let mut desired = self
            .desired
            .take()
            .unwrap_or_else(|| Desired::new(self.config.clone()));
        let delta = desired.update(state);
        let mut report = SyncReport {
            full,
            services_replanned: delta.services_replanned,
            ..SyncReport::default()
        };
        let result = if full {
            self.apply_full(desired.plan(), now, &mut report)
        } else if self.draining.is_empty() && delta.is_empty() {
            report.skipped = true;
            Ok(())
        } else {
            self.apply_delta(desired.plan(), &delta, now, &mut report)
        };
        self.desired = Some(desired);
        self.synced = result.is_ok();
        report.draining = self.draining.len();
        result.map(|()| report)
    }

    /// A partial sync: the kernel held the plan before `delta`; brings it to
    /// `wanted` by what `delta` changed, in the order of [`Self::apply_full`].
    fn apply_delta(
        &mut self,
        wanted: &Plan,
        delta: &Delta,
        now: Instant,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        self.links.ensure_dummy().map_err(SyncError::Device)?;
        let script = delta.ipset_script(self.config.family);
        report.bytes += script.len();
        self.ipset.restore(&script)?;

        let mut ops = Vec::new();
        for change in delta.services.values() {
            match (&change.old, &change.new) {
                (None, Some(new)) => ops.push(Operation::AddService(new.vs.clone())),
                (Some(old), Some(new)) if old.vs != new.vs => {
                    ops.push(Operation::UpdateService(new.vs.clone()))
                }
                _ => {}
            }
        }
        let mut refused = self.send(&ops, report)?;
        for ip in &delta.bind_added {
            self.links.bind(*ip).map_err(SyncError::Device)?;
        }

        let examine: BTreeSet<ServiceKey> = delta
            .services
            .iter()
            .filter(|(_, c)| c.new.is_some())
            .map(|(k, _)| *k)
            .collect();
        refused.extend(self.real_servers_of(wanted, examine, now, report)?);

        if delta.iptables_changed {
            report.bytes += wanted.iptables.len();
            self.ipt.restore(&wanted.iptables)?;
        }

        let gone = delta
            .services
            .iter()
            .filter(|(_, c)| c.new.is_none())
            .map(|(k, _)| *k);
        self.remove_stale(wanted, &delta.bind_removed, gone, refused, report)
    }

    /// The end of every sync, once the rules no longer refer to them: unbinds
    /// `unbind`, deletes the virtual servers `gone` (but those in
    /// `--ipvs-exclude-cidrs`), and forgets draining real servers of deleted ones.
    /// Returns the sync's result given the refusals so far.
    fn remove_stale(
        &mut self,
        wanted: &Plan,
        unbind: &[IpAddr],
        gone: impl Iterator<Item = ServiceKey>,
        mut refused: Vec<String>,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        for ip in unbind {
            self.links.unbind(*ip).map_err(SyncError::Device)?;
        }
        let stale: Vec<Operation> = gone
            .filter(|k| !self.exclude.iter().any(|n| n.contains(&k.address)))
            .map(Operation::DeleteService)
            .collect();
        self.draining
            .retain(|(k, _), _| wanted.services.contains_key(k));
        refused.extend(self.send(&stale, report)?);
        refusal(refused)
    }

    /// Brings the real servers of `examine`, and of the virtual servers with real
    /// servers draining, to `wanted`; returns the refusals.
    fn real_servers_of(
        &mut self,
        wanted: &Plan,
        mut examine: BTreeSet<ServiceKey>,
        now: Instant,
        report: &mut SyncReport,
    ) -> Result<Vec<String>, SyncError> {
        examine.extend(
            self.draining
                .keys()
                .map(|(k, _)| *k)
                .filter(|k| wanted.services.contains_key(k)),
        );
        report.services_examined = examine.len();
        report.services_changed = examine
            .iter()
            .map(|k| &wanted.services[k].service.service)
            .collect::<BTreeSet<_>>()
            .len();
        let mut ops = Vec::new();
        for key in &examine {
            let reals = &wanted.services[key].reals;
            self.real_server_changes(key, reals, now, &mut ops)?;
        }
        self.send(&ops, report)
    }

    /// A full sync: reads the ipsets, virtual servers and bound addresses from the
    /// kernel, brings them to `wanted`, and compares every real server.
    fn apply_full(
        &mut self,
        wanted: &Plan,
        now: Instant,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let family = self.config.family;
        self.links.ensure_dummy().map_err(SyncError::Device)?;

        // ipsets first: the rules written below match on them.
        let current_sets = self.ipset.save(family)?;
        let script = sets::restore_script(&current_sets, &wanted.sets, family);
        report.bytes += script.len();
        self.ipset.restore(&script)?;

        // Virtual servers: create or update before binding their address.
        let dumped: Vec<VirtualServer> = self
            .table
            .services()?
            .into_iter()
            .filter(|vs| IpFamily::of(&vs.address) == family)
            .collect();
        let kernel: BTreeMap<ServiceKey, &VirtualServer> =
            dumped.iter().map(|vs| (vs.key(), vs)).collect();
        let mut ops = Vec::new();
        for (key, planned) in &wanted.services {
            match kernel.get(key) {
                None => ops.push(Operation::AddService(planned.vs.clone())),
                Some(vs) if **vs != planned.vs => {
                    ops.push(Operation::UpdateService(planned.vs.clone()))
                }
                Some(_) => {}
            }
        }
        let mut refused = self.send(&ops, report)?;

        let bound = self.links.bound(family).map_err(SyncError::Device)?;
        for ip in wanted.bind.difference(&bound) {
            self.links.bind(*ip).map_err(SyncError::Device)?;
        }

        // Every virtual server's real servers.
        let examine: BTreeSet<ServiceKey> = wanted.services.keys().copied().collect();
        refused.extend(self.real_servers_of(wanted, examine, now, report)?);

        self.ensure_jumps()?;
        report.bytes += wanted.iptables.len();
        self.ipt.restore(&wanted.iptables)?;

        let unbind: Vec<IpAddr> = bound.difference(&wanted.bind).copied().collect();
        let gone: Vec<ServiceKey> = kernel
            .keys()
            .filter(|k| !wanted.services.contains_key(k))
            .copied()
            .collect();
        self.remove_stale(wanted, &unbind, gone.into_iter(), refused, report)
    }

    /// Sends a batch; returns the refusals as messages (missing objects when
    /// deleting are not refusals).
    fn send(
        &mut self,
        ops: &[Operation],
        report: &mut SyncReport,
    ) -> Result<Vec<String>, SyncError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        report.operations += ops.len();
        let result = self.table.apply(ops)?;
        Ok(result
            .failures
            .into_iter()
            .filter(|(i, e)| {
                !(e.is_not_found()
                    && matches!(
                        ops[*i],
                        Operation::DeleteService(_) | Operation::DeleteRealServer(..)
                    ))
            })
            .map(|(_, e)| e.to_string())
            .collect())
    }

    fn real_server_changes(
        &mut self,
        key: &ServiceKey,
        wanted: &[RealServer],
        now: Instant,
        ops: &mut Vec<Operation>,
    ) -> Result<(), SyncError> {
        let current = self.table.real_servers(key)?;
        let wanted_addrs: BTreeSet<SocketAddr> =
            wanted.iter().map(RealServer::socket_addr).collect();
        for rs in wanted {
            let addr = rs.socket_addr();
            self.draining.remove(&(*key, addr));
            match current.iter().find(|(c, _)| c.socket_addr() == addr) {
                None => ops.push(Operation::AddRealServer(*key, rs.clone())),
                Some((c, _)) if c.weight != rs.weight => {
                    ops.push(Operation::UpdateRealServer(*key, rs.clone()))
                }
                Some(_) => {}
            }
        }
        for (rs, stats) in current {
            let addr = rs.socket_addr();
            if wanted_addrs.contains(&addr) {
                continue;
            }
            let connections = stats.active_conns + stats.inactive_conns;
            let drains = key.protocol == Protocol::Tcp && connections > 0;
            let since = *self.draining.entry((*key, addr)).or_insert(now);
            if !drains || now.duration_since(since) >= self.drain_limit {
                self.draining.remove(&(*key, addr));
                ops.push(Operation::DeleteRealServer(*key, rs));
            } else if rs.weight != 0 {
                ops.push(Operation::UpdateRealServer(
                    *key,
                    RealServer { weight: 0, ..rs },
                ));
            }
        }
        Ok(())
    }

    /// Makes sure our chains exist and the built-in chains jump to them (each
    /// missing jump inserted first, as upstream).
    fn ensure_jumps(&self) -> Result<(), ApplyError> {
        self.ipt
            .ensure_jumps(&JUMPS, &["nat", "filter"], false)
            .map(|_| ())
    }
}

/// The error for IPVS changes the kernel refused, if any.
fn refusal(refused: Vec<String>) -> Result<(), SyncError> {
    match refused.first() {
        None => Ok(()),
        Some(first) => Err(SyncError::Refused {
            count: refused.len(),
            first: first.clone(),
        }),
    }
}

#[cfg(test)]
#[path = "proxier_tests.rs"]
mod tests;
