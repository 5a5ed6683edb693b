//! The proxier against in-memory kernels: [`FakeTable`] for IPVS,
//! [`FakeInterfaces`] for `kube-ipvs0`, a fake `ipset` and `FakeIptables`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kpr_exec::{Output, Runner};
use kpr_iptables::apply::{Backend, Iptables};
use kpr_iptables::fake::FakeIptables;
use kpr_model::{IpFamily, Objects, Store};

use super::*;
use crate::table::FakeTable;
use crate::types::RealServerStats;

/// `ipset save` / `ipset restore` over a map of sets; iptables to a FakeIptables.
#[derive(Default)]
struct Tools {
    sets: Mutex<BTreeMap<String, BTreeSet<String>>>,
    iptables: FakeIptables,
}

impl Runner for Tools {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> std::io::Result<Output> {
        if program != "ipset" {
            return self.iptables.run(program, args, stdin);
        }
        let mut sets = self
            .sets
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        let mut out = Output::default();
        match args.first().copied() {
            Some("save") => {
                for (name, entries) in sets.iter() {
                    out.stdout.push_str(&format!("create {name} x\n"));
                    for e in entries {
                        out.stdout.push_str(&format!("add {name} {e}\n"));
                    }
                }
            }
            Some("restore") => {
                let text = String::from_utf8_lossy(stdin.unwrap_or_default()).to_string();
                for line in text.lines() {
                    let w: Vec<&str> = line.split_whitespace().collect();
                    match w.as_slice() {
                        ["create", name, ..] => {
                            sets.entry(name.to_string()).or_default();
                        }
                        ["add", name, entry, ..] => {
                            sets.entry(name.to_string())
                                .or_default()
                                .insert(entry.to_string());
                        }
                        ["del", name, entry, ..] => {
                            sets.entry(name.to_string()).or_default().remove(*entry);
                        }
                        _ => out.status = 1,
                    }
                }
            }
            _ => out.status = 1,
        }
        Ok(out)
    }
}

struct Rig {
    proxier: FamilyProxier,
    store: Store,
}

fn service(name: &str, ip: &str, proto: &str, eps: &[&str]) -> Objects {
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: ns}}\n\
         spec: {{clusterIP: {ip}, ports: [{{name: p, port: 80, protocol: {proto}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: ns, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nendpoints: [{}]\nports: [{{name: p, port: 8080, protocol: {proto}}}]\n",
        eps.iter()
            .map(|e| format!("{{addresses: [{e}]}}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    crate::test_objects::from_yaml(&yaml)
}

impl Rig {
    fn new(table: FakeTable, links: FakeInterfaces) -> (Self, Arc<Tools>) {
        let tools = Arc::new(Tools::default());
        let runner: Arc<dyn Runner> = tools.clone();
        let proxier = FamilyProxier::new(
            PlanConfig::new(IpFamily::V4),
            vec!["192.0.2.0/24".parse().unwrap_or_default()],
            Box::new(SharedTable(Arc::new(Mutex::new(table)))),
            Box::new(links),
            Ipset::new(runner.clone()),
            Iptables::new(IpFamily::V4, Backend::Default, runner),
        );
        (
            Self {
                proxier,
                store: Store::new("node"),
            },
            tools,
        )
    }

    fn sync(&mut self, objects: &Objects, full: bool) -> SyncReport {
        self.store.replace_all(objects);
        let state = self.store.snapshot();
        match self.proxier.sync(state.family(IpFamily::V4), full) {
            Ok(r) => r,
            Err(e) => panic!("sync failed: {e}"),
        }
    }
}

/// A table the test keeps a handle on while the proxier owns it.
#[derive(Clone)]
struct SharedTable(Arc<Mutex<FakeTable>>);

impl IpvsTable for SharedTable {
    fn services(&mut self) -> Result<Vec<VirtualServer>, IpvsError> {
        self.0
            .lock()
            .map_err(|_| IpvsError::NotAvailable)?
            .services()
    }
    fn real_servers(
        &mut self,
        key: &ServiceKey,
    ) -> Result<Vec<(RealServer, crate::types::RealServerStats)>, IpvsError> {
        self.0
            .lock()
            .map_err(|_| IpvsError::NotAvailable)?
            .real_servers(key)
    }
    fn apply(&mut self, ops: &[Operation]) -> Result<crate::netlink::BatchReport, IpvsError> {
        self.0
            .lock()
            .map_err(|_| IpvsError::NotAvailable)?
            .apply(ops)
    }
}

fn rig_with(table: FakeTable) -> (Rig, Arc<Mutex<FakeTable>>, Arc<Tools>) {
    let (mut rig, tools) = Rig::new(FakeTable::default(), FakeInterfaces::default());
    let shared = Arc::new(Mutex::new(table));
    rig.proxier.table = Box::new(SharedTable(shared.clone()));
    (rig, shared, tools)
}

fn key(ip: &str, proto: Protocol) -> ServiceKey {
    ServiceKey::new(ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])), proto, 80)
}

fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

fn weights(table: &Arc<Mutex<FakeTable>>, k: &ServiceKey) -> Vec<(SocketAddr, i32)> {
    table.lock().map(|t| t.weights(k)).unwrap_or_default()
}

/// The first sync creates the virtual server with its real servers, binds the
/// ClusterIP, fills the sets and writes the chains; an unchanged state is skipped.
#[test]
fn first_sync_and_skip() {
    let (mut rig, table, tools) = rig_with(FakeTable::default());
    let objs = service("a", "10.96.0.10", "TCP", &["10.244.1.5", "10.244.2.6"]);
    let r = rig.sync(&objs, false);
    assert!(r.full && !r.skipped);
    let k = key("10.96.0.10", Protocol::Tcp);
    assert_eq!(
        weights(&table, &k),
        vec![(addr("10.244.1.5:8080"), 1), (addr("10.244.2.6:8080"), 1)]
    );
    let sets = tools.sets.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(sets["KUBE-CLUSTER-IP"].contains("10.96.0.10,tcp:80"));
    assert!(sets["KUBE-IPVS-IPS"].contains("10.96.0.10"));
    assert_eq!(sets.len(), 17);
    let restores = tools.iptables.restores();
    assert!(restores.iter().any(|r| r.contains(
        "-I PREROUTING 1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
    )));
    assert!(restores.iter().any(|r| r.contains("-A KUBE-IPVS-FILTER")));
    let again = rig.sync(&objs, false);
    assert!(again.skipped, "{again:?}");
}

/// A removed TCP real server with connections drains at weight 0 and goes when
/// idle; a removed UDP one goes at once.
#[test]
fn graceful_termination() {
    let (mut rig, table, _) = rig_with(FakeTable::default());
    let tcp = key("10.96.0.10", Protocol::Tcp);
    rig.sync(
        &service("a", "10.96.0.10", "TCP", &["10.244.1.5", "10.244.2.6"]),
        false,
    );
    if let Ok(mut t) = table.lock() {
        t.set_stats(
            &tcp,
            addr("10.244.2.6:8080"),
            RealServerStats {
                active_conns: 2,
                ..Default::default()
            },
        );
    }
    let fewer = service("a", "10.96.0.10", "TCP", &["10.244.1.5"]);
    rig.sync(&fewer, false);
    assert_eq!(
        weights(&table, &tcp),
        vec![(addr("10.244.1.5:8080"), 1), (addr("10.244.2.6:8080"), 0)]
    );
    assert_eq!(rig.proxier.draining().len(), 1);
    // Still connected: stays; the next sync is not skipped while something drains.
    let r = rig.sync(&fewer, false);
    assert!(!r.skipped && r.services_examined == 1);
    assert_eq!(weights(&table, &tcp).len(), 2);
    if let Ok(mut t) = table.lock() {
        t.set_stats(&tcp, addr("10.244.2.6:8080"), RealServerStats::default());
    }
    rig.sync(&fewer, false);
    assert_eq!(weights(&table, &tcp), vec![(addr("10.244.1.5:8080"), 1)]);
    assert!(rig.proxier.draining().is_empty());

    let udp = key("10.96.0.11", Protocol::Udp);
    rig.sync(
        &service("u", "10.96.0.11", "UDP", &["10.244.1.7", "10.244.1.8"]),
        false,
    );
    if let Ok(mut t) = table.lock() {
        t.set_stats(
            &udp,
            addr("10.244.1.8:8080"),
            RealServerStats {
                active_conns: 5,
                inactive_conns: 5,
                ..Default::default()
            },
        );
    }
    rig.sync(&service("u", "10.96.0.11", "UDP", &["10.244.1.7"]), false);
    assert_eq!(weights(&table, &udp), vec![(addr("10.244.1.7:8080"), 1)]);
}

/// Draining is bounded: past the limit the real server goes with its connections.
#[test]
fn drain_limit() {
    let (mut rig, table, _) = rig_with(FakeTable::default());
    rig.proxier.set_drain_limit(Duration::ZERO);
    let tcp = key("10.96.0.10", Protocol::Tcp);
    rig.sync(
        &service("a", "10.96.0.10", "TCP", &["10.244.1.5", "10.244.2.6"]),
        false,
    );
    if let Ok(mut t) = table.lock() {
        t.set_stats(
            &tcp,
            addr("10.244.2.6:8080"),
            RealServerStats {
                active_conns: 2,
                ..Default::default()
            },
        );
    }
    rig.sync(&service("a", "10.96.0.10", "TCP", &["10.244.1.5"]), false);
    assert_eq!(weights(&table, &tcp), vec![(addr("10.244.1.5:8080"), 1)]);
}

/// After a restart (a new proxier, the kernel as the old one left it): a wanted
/// real server at weight 0 is set back to 1 (kubernetes #92019, #108319, #131134);
/// an unwanted one with connections keeps draining; a foreign virtual server is
/// deleted unless inside an excluded CIDR; a hand-deleted one is restored.
#[test]
fn restart_repairs_the_kernel() {
    let tcp = key("10.96.0.10", Protocol::Tcp);
    let mut kernel = FakeTable::default();
    let vs = VirtualServer::new(tcp.address, Protocol::Tcp, 80, "rr");
    let mut ops = vec![Operation::AddService(vs)];
    for (ip, w) in [("10.244.1.5", 0), ("10.244.9.9", 0)] {
        ops.push(Operation::AddRealServer(
            tcp,
            RealServer::new(ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])), 8080, w),
        ));
    }
    for ip in ["198.51.100.7", "192.0.2.7"] {
        ops.push(Operation::AddService(VirtualServer::new(
            ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            Protocol::Tcp,
            80,
            "rr",
        )));
    }
    let _ = kernel.apply(&ops);
    kernel.set_stats(
        &tcp,
        addr("10.244.9.9:8080"),
        RealServerStats {
            active_conns: 1,
            ..Default::default()
        },
    );
    let (mut rig, table, _) = rig_with(kernel);
    let objs = service("a", "10.96.0.10", "TCP", &["10.244.1.5"]);
    rig.sync(&objs, false);
    assert_eq!(
        weights(&table, &tcp),
        vec![(addr("10.244.1.5:8080"), 1), (addr("10.244.9.9:8080"), 0)]
    );
    assert_eq!(rig.proxier.draining().len(), 1);
    let keys: Vec<String> = table
        .lock()
        .map(|t| t.services.keys().map(ToString::to_string).collect())
        .unwrap_or_default();
    assert_eq!(keys, vec!["TCP 10.96.0.10:80", "TCP 192.0.2.7:80"]);

    // Someone deletes our virtual server and re-weights a real server: the next
    // full sync puts both back.
    if let Ok(mut t) = table.lock() {
        let _ = t.apply(&[Operation::DeleteService(tcp)]);
    }
    rig.sync(&objs, true);
    assert_eq!(weights(&table, &tcp), vec![(addr("10.244.1.5:8080"), 1)]);
}

/// A deleted Service loses its virtual server and its address on kube-ipvs0.
#[test]
fn service_removal() {
    let (mut rig, table, tools) = rig_with(FakeTable::default());
    let mut both = service("a", "10.96.0.10", "TCP", &["10.244.1.5"]);
    let b = service("b", "10.96.0.11", "TCP", &["10.244.1.6"]);
    both.services.extend(b.services);
    both.slices.extend(b.slices);
    rig.sync(&both, false);
    assert_eq!(table.lock().map(|t| t.services.len()).unwrap_or(0), 2);
    let r = rig.sync(&service("a", "10.96.0.10", "TCP", &["10.244.1.5"]), false);
    assert!(!r.full);
    assert_eq!(table.lock().map(|t| t.services.len()).unwrap_or(0), 1);
    let sets = tools.sets.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(!sets["KUBE-IPVS-IPS"].contains("10.96.0.11"));
    assert!(!sets["KUBE-CLUSTER-IP"].contains("10.96.0.11,tcp:80"));
}

/// One endpoint change among 40 Services: the partial sync re-plans that Service
/// only, examines its one virtual server, adds one real server, writes no ipset
/// entry and no iptables rule; the kernel then matches a full plan.
#[test]
fn endpoint_change_touches_one_service() {
    let (mut rig, table, tools) = rig_with(FakeTable::default());
    let build = |extra: bool| {
        let mut all = Objects::default();
        for i in 0..40 {
            let mut eps = vec!["10.244.1.5"];
            if extra && i == 17 {
                eps.push("10.244.1.9");
            }
            let one = service(
                &format!("s{i:02}"),
                &format!("10.96.0.{}", 10 + i),
                "TCP",
                &eps,
            );
            all.services.extend(one.services);
            all.slices.extend(one.slices);
        }
        all
    };
    rig.sync(&build(false), false);
    let restores = tools.iptables.restores().len();
    let r = rig.sync(&build(true), false);
    assert!(!r.full && !r.skipped, "{r:?}");
    assert_eq!(r.services_replanned, 1, "{r:?}");
    assert_eq!((r.services_examined, r.services_changed), (1, 1), "{r:?}");
    assert_eq!(r.operations, 1, "{r:?}");
    assert_eq!(r.bytes, 0, "no ipset or iptables input: {r:?}");
    assert_eq!(tools.iptables.restores().len(), restores);
    assert_eq!(
        weights(&table, &key("10.96.0.27", Protocol::Tcp)),
        vec![(addr("10.244.1.5:8080"), 1), (addr("10.244.1.9:8080"), 1)]
    );
    // A forced full sync now finds nothing to do.
    let full = rig.sync(&build(true), true);
    assert!(full.full && full.operations == 0, "{full:?}");
}
