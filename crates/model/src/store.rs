//! The store: the model's only mutable part.
//!
//! Sources feed it [`Change`]s (one object added, updated or deleted) or a whole
//! [`Objects`] set (a manifest directory re-read). It keeps the converted form of each
//! object, marks the Services an event touches, and on [`Store::snapshot`] recomputes
//! only those Services. Updates that change nothing the data planes use leave the
//! snapshot's `Arc`s untouched, so a partial sync sees no change (as upstream's change
//! trackers drop no-op updates).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1 as core;

use crate::change::ConvertedObject;
pub use crate::change::{Change, Converted, HEADLESS_LABEL, Objects, SERVICE_PROXY_NAME_LABEL};
use crate::endpoint::{SliceInfo, endpoints_for_port};
use crate::name::{IpFamily, NamespacedName};
use crate::node::NodeInfo;
use crate::problem::{ObjectKind, Problem};
use crate::service::ServiceInfo;
use crate::service_cidr::convert_service_cidr;
use crate::state::{FamilyState, ProxyState, ServicePortState, ServiceState};
use crate::topology::{NodeTopology, categorize};

/// Holds the converted objects and produces [`ProxyState`] snapshots.
#[derive(Debug)]
pub struct Store {
    node: NodeInfo,
    services: HashMap<NamespacedName, ServiceInfo>,
    slices: HashMap<NamespacedName, SliceInfo>,
    mirrored: HashMap<NamespacedName, Vec<SliceInfo>>,
    /// Slice names per Service, sorted (a Vec: almost every Service has one slice,
    /// and a `BTreeSet` allocates room for eleven).
    slices_by_service: HashMap<NamespacedName, Vec<Arc<str>>>,
    dirty: HashSet<NamespacedName>,
    resolved: [Arc<BTreeMap<NamespacedName, Arc<ServiceState>>>; 2],
    service_cidrs: BTreeMap<String, Vec<ipnet::IpNet>>,
}

impl Store {
    /// A store for the node called `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node: NodeInfo::named(node_name),
            services: HashMap::new(),
            slices: HashMap::new(),
            mirrored: HashMap::new(),
            slices_by_service: HashMap::new(),
            dirty: HashSet::new(),
            resolved: Default::default(),
            service_cidrs: BTreeMap::new(),
        }
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.node.name
    }

    /// This node as currently known.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Number of Services held (proxied ones only).
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The names of the objects of `kind` held: Services (proxied ones),
    /// EndpointSlices, or v1 Endpoints (mirrored); none for other kinds.
    pub fn names(&self, kind: ObjectKind) -> Box<dyn Iterator<Item = &NamespacedName> + '_> {
        match kind {
            ObjectKind::Service => Box::new(self.services.keys()),
            ObjectKind::EndpointSlice => Box::new(self.slices.keys()),
            ObjectKind::Endpoints => Box::new(self.mirrored.keys()),
            ObjectKind::Node | ObjectKind::ServiceCidr => Box::new(std::iter::empty()),
        }
    }

    /// True if a snapshot would differ from the last one taken.
    pub fn has_pending_changes(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Applies one change. Problems with the object are returned; the object (or the
    /// bad part of it) is skipped and everything else keeps working.
    pub fn apply(&mut self, change: Change) -> Vec<Problem> {
        let mut problems = Vec::new();
        match change {
            Change::ServiceUpsert(svc) => {
                problems = self.apply_converted(Converted::service(&svc));
            }
            Change::SliceUpsert(slice) => {
                problems = self.apply_converted(Converted::slice(&slice));
            }
            Change::EndpointsUpsert(eps) => {
                problems = self.apply_converted(Converted::endpoints(&eps));
            }
            Change::Converted(converted) => problems = self.apply_converted(*converted),
            Change::ServiceDelete(name) => self.set_service(name, None),
            Change::SliceDelete(key) => self.remove_slice(&key),
            Change::EndpointsDelete(key) => self.set_mirrored(key, Vec::new()),
            Change::NodeUpsert(node) => self.upsert_node(&node, &mut problems),
            Change::ServiceCidrUpsert(obj) => {
                let (name, cidrs) = convert_service_cidr(&obj, &mut problems);
                self.service_cidrs.insert(name, cidrs);
            }
            Change::ServiceCidrDelete(name) => {
                self.service_cidrs.remove(&name);
            }
            Change::NodeDelete(name) => {
                if name == self.node.name && self.node.present {
                    let zone_before = self.node.zone().map(str::to_owned);
                    self.node = NodeInfo {
                        deleted: true,
                        ..NodeInfo::named(std::mem::take(&mut self.node.name))
                    };
                    if zone_before.is_some() {
                        self.mark_all_dirty();
                    }
                }
            }
        }
        problems
    }

    /// Stores a converted object; returns the problems found converting it.
    fn apply_converted(&mut self, converted: Converted) -> Vec<Problem> {
        match converted.object {
            ConvertedObject::Service(name, info) => self.set_service(name, info),
            ConvertedObject::Slice(key, Some(info)) => self.upsert_slice(key, info),
            ConvertedObject::Slice(key, None) => self.remove_slice(&key),
            ConvertedObject::Endpoints(key, slices) => self.set_mirrored(key, slices),
        }
        converted.problems
    }

    /// Replaces everything with `objects` (a full re-list), marking only the Services
    /// whose converted form actually changed.
    pub fn replace_all(&mut self, objects: &Objects) -> Vec<Problem> {
        self.replace(objects, objects.converted.iter().cloned())
    }

    /// [`Store::replace_all`], moving the converted objects into the store instead of
    /// copying them.
    pub fn replace_all_owned(&mut self, mut objects: Objects) -> Vec<Problem> {
        let converted = std::mem::take(&mut objects.converted);
        self.replace(&objects, converted.into_iter())
    }

    fn replace(
        &mut self,
        objects: &Objects,
        converted: impl Iterator<Item = Converted>,
    ) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut seen: [HashSet<NamespacedName>; 3] = Default::default();
        let raw = (objects.services.iter().map(Converted::service))
            .chain(objects.slices.iter().map(Converted::slice))
            .chain(objects.endpoints.iter().map(Converted::endpoints));
        for object in raw.chain(converted) {
            let kind = match object.kind() {
                ObjectKind::Service => 0,
                ObjectKind::EndpointSlice => 1,
                _ => 2,
            };
            seen[kind].insert(object.key().clone());
            problems.extend(self.apply_converted(object));
        }
        let [seen_services, seen_slices, seen_endpoints] = &seen;
        let stale: Vec<_> = (self.services.keys())
            .filter(|k| !seen_services.contains(*k))
            .cloned()
            .collect();
        for name in stale {
            self.set_service(name, None);
        }
        let stale: Vec<_> = (self.slices.keys())
            .filter(|k| !seen_slices.contains(*k))
            .cloned()
            .collect();
        for key in stale {
            self.remove_slice(&key);
        }
        let stale: Vec<_> = (self.mirrored.keys())
            .filter(|k| !seen_endpoints.contains(*k))
            .cloned()
            .collect();
        for key in stale {
            self.set_mirrored(key, Vec::new());
        }

        self.service_cidrs = objects
            .service_cidrs
            .iter()
            .map(|o| convert_service_cidr(o, &mut problems))
            .collect();

        match objects
            .nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(self.node.name.as_str()))
        {
            Some(node) => self.upsert_node(node, &mut problems),
            None => {
                let name = self.node.name.clone();
                self.apply(Change::NodeDelete(name));
            }
        }
        problems
    }

    /// Stores (or, with `None`, removes) a Service's converted form.
    fn set_service(&mut self, name: NamespacedName, info: Option<ServiceInfo>) {
        match info {
            Some(info) => {
                if self.services.get(&name) != Some(&info) {
                    self.services.insert(name.clone(), info);
                    self.dirty.insert(name);
                }
            }
            None => {
                if self.services.remove(&name).is_some() {
                    self.dirty.insert(name);
                }
            }
        }
    }

    fn upsert_slice(&mut self, key: NamespacedName, info: SliceInfo) {
        if self.slices.get(&key) == Some(&info) {
            return;
        }
        // The slice may have moved to another Service (label change).
        if let Some(old) = self.slices.get(&key)
            && old.service != info.service
        {
            let old_service = old.service.clone();
            self.unlink_slice(&old_service, &key.name);
        }
        let names = self
            .slices_by_service
            .entry(info.service.clone())
            .or_default();
        if let Err(at) = names.binary_search(&key.name) {
            names.reserve_exact(1);
            names.insert(at, key.name.clone());
        }
        self.dirty.insert(info.service.clone());
        self.slices.insert(key, info);
    }

    fn remove_slice(&mut self, key: &NamespacedName) {
        if let Some(old) = self.slices.remove(key) {
            self.unlink_slice(&old.service, &key.name);
            self.dirty.insert(old.service);
        }
    }

    fn unlink_slice(&mut self, service: &NamespacedName, slice_name: &str) {
        if let Some(set) = self.slices_by_service.get_mut(service) {
            if let Ok(at) = set.binary_search_by(|n| (**n).cmp(slice_name)) {
                set.remove(at);
            }
            if set.is_empty() {
                self.slices_by_service.remove(service);
            }
        }
        self.dirty.insert(service.clone());
    }

    fn set_mirrored(&mut self, key: NamespacedName, slices: Vec<SliceInfo>) {
        let changed = self
            .mirrored
            .get(&key)
            .map_or(!slices.is_empty(), |old| *old != slices);
        if !changed {
            return;
        }
        if slices.is_empty() {
            self.mirrored.remove(&key);
        } else {
            self.mirrored.insert(key.clone(), slices);
        }
        self.dirty.insert(key);
    }

    fn upsert_node(&mut self, node: &core::Node, problems: &mut Vec<Problem>) {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        if name != self.node.name {
            problems.push(Problem::new(
                ObjectKind::Node,
                name,
                "metadata.name",
                format!("not this node ({:?}); ignored", self.node.name),
            ));
            return;
        }
        let zone_before = self.node.zone().map(str::to_owned);
        let mut updated = self.node.clone();
        updated.update_from(node, problems);
        if updated.zone().map(str::to_owned) != zone_before {
            self.mark_all_dirty();
        }
        self.node = updated;
    }

    fn mark_all_dirty(&mut self) {
        self.dirty.extend(self.services.keys().cloned());
        for map in &self.resolved {
            self.dirty.extend(map.keys().cloned());
        }
    }

    /// Takes a snapshot, recomputing the Services changed since the last one.
    pub fn snapshot(&mut self) -> ProxyState {
        let dirty = std::mem::take(&mut self.dirty);
        for family in IpFamily::ALL {
            let updates: Vec<(NamespacedName, Option<ServiceState>)> = dirty
                .iter()
                .map(|name| {
                    let state = self.services.get(name).and_then(|svc| {
                        resolve_service(svc, family, &self.node, self.slices_for(name, svc))
                    });
                    (name.clone(), state)
                })
                .collect();
            let map = Arc::make_mut(&mut self.resolved[family.index()]);
            for (name, state) in updates {
                match state {
                    Some(state) => {
                        if map.get(&name).is_none_or(|old| **old != state) {
                            map.insert(name, Arc::new(state));
                        }
                    }
                    None => {
                        map.remove(&name);
                    }
                }
            }
        }
        ProxyState {
            families: IpFamily::ALL.map(|family| FamilyState {
                family,
                services: Arc::clone(&self.resolved[family.index()]),
            }),
            node: Arc::new(self.node.clone()),
            service_cidrs: Arc::new(
                self.service_cidrs
                    .values()
                    .flatten()
                    .copied()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            ),
        }
    }

    fn slices_for<'a>(&'a self, name: &NamespacedName, svc: &ServiceInfo) -> Vec<&'a SliceInfo> {
        let mut out: Vec<&SliceInfo> = self
            .slices_by_service
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|slice_name| {
                self.slices.get(&NamespacedName::new(
                    name.namespace.clone(),
                    slice_name.clone(),
                ))
            })
            .collect();
        if !svc.has_selector
            && let Some(mirrored) = self.mirrored.get(name)
        {
            out.extend(mirrored);
        }
        out
    }
}

fn resolve_service(
    svc: &ServiceInfo,
    family: IpFamily,
    node: &NodeInfo,
    slices: Vec<&SliceInfo>,
) -> Option<ServiceState> {
    let ports = &svc.ports[family.index()];
    if ports.is_empty() {
        return None;
    }
    let topo = NodeTopology {
        node_name: &node.name,
        zone: node.zone(),
    };
    let family_slices: Vec<&SliceInfo> =
        slices.into_iter().filter(|s| s.family == family).collect();
    let ports = ports
        .iter()
        .map(|info| {
            let endpoints = endpoints_for_port(
                family_slices.iter().copied(),
                &info.name.port,
                info.name.protocol,
                &node.name,
            );
            let categorized = categorize(info, &endpoints, topo);
            ServicePortState {
                info: info.clone(),
                endpoints,
                selection: categorized.selection,
                has_any_endpoints: categorized.has_any_endpoints,
            }
        })
        .collect();
    Some(ServiceState {
        name: svc.name.clone(),
        ports,
    })
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
