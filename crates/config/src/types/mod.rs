//! The `KubeProxyConfiguration` wire format (`kubeproxy.config.k8s.io/v1alpha1`).
//!
//! Field names, nesting, pointer-ness (`Option`) and Go spellings follow
//! `staging/src/k8s.io/kube-proxy/config/v1alpha1/types.go` at v1.35 and the
//! `ClientConnectionConfiguration` / `LoggingConfiguration` it embeds from
//! component-base v0.35. `Serialize` gives the same shape back (camelCase keys,
//! Go duration strings), which is what `/configz` and `--write-config-to`
//! print.
//!
//! Decoding is strict: unknown keys are errors (`deny_unknown_fields`), except
//! the few keys older releases had (see [`crate::load()`]), which are captured in
//! private fields and reported as warnings. An explicit `null` means "unset"
//! for every field, which is how kubeadm-era dumps spell empty values.

mod logging;
mod sections;

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};

use crate::duration::GoDuration;

pub use logging::{
    FlushFrequency, FormatOptions, LoggingConfiguration, OutputRoutingOptions, Quantity,
    VModuleItem,
};
pub use sections::{
    ClientConnectionConfiguration, DetectLocalConfiguration, KubeProxyConntrackConfiguration,
    KubeProxyIptablesConfiguration, KubeProxyIpvsConfiguration, KubeProxyNftablesConfiguration,
    KubeProxyWinkernelConfiguration,
};

/// The only `apiVersion` upstream v1.35 accepts for this kind.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The object `kind`.
pub const KIND: &str = "KubeProxyConfiguration";

/// Everything needed to configure the proxy, as written in the config file.
///
/// Zero values ("", 0, "0s", `None`) mean "use the upstream default"; see
/// [`crate::defaults`]. After [`crate::load()`] the value is defaulted and
/// validated, and the typed accessors in [`crate::settings`] are the way to
/// read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeProxyConfiguration {
    /// Must be `kubeproxy.config.k8s.io/v1alpha1`.
    #[serde(default, deserialize_with = "nullable")]
    pub api_version: String,
    /// Must be `KubeProxyConfiguration`.
    #[serde(default, deserialize_with = "nullable")]
    pub kind: String,
    /// Feature gate name to enabled. Written only when non-empty (Go `omitempty`).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub feature_gates: BTreeMap<String, bool>,
    /// How to reach the API server.
    #[serde(default, deserialize_with = "nullable")]
    pub client_connection: ClientConnectionConfiguration,
    /// Log format, verbosity and flushing.
    #[serde(default, deserialize_with = "nullable")]
    pub logging: LoggingConfiguration,
    /// Node name to use instead of the host name, if non-empty.
    #[serde(default, deserialize_with = "nullable")]
    pub hostname_override: String,
    /// Override of the node's primary IP (no socket is bound to it).
    #[serde(default, deserialize_with = "nullable")]
    pub bind_address: String,
    /// `IP:port` of the health check server; empty after defaulting means disabled.
    #[serde(default, deserialize_with = "nullable")]
    pub healthz_bind_address: String,
    /// `IP:port` of the metrics server.
    #[serde(default, deserialize_with = "nullable")]
    pub metrics_bind_address: String,
    /// Exit when a server port cannot be bound.
    #[serde(default, deserialize_with = "nullable")]
    pub bind_address_hard_fail: bool,
    /// Serve `/debug/pprof`-style profiling on the metrics server.
    #[serde(default, deserialize_with = "nullable")]
    pub enable_profiling: bool,
    /// Previous minor version whose hidden metrics should be shown.
    #[serde(default, deserialize_with = "nullable")]
    pub show_hidden_metrics_for_version: String,
    /// `iptables`, `ipvs`, `nftables`, or empty (iptables).
    #[serde(default, deserialize_with = "nullable")]
    pub mode: String,
    /// iptables mode settings.
    #[serde(default, deserialize_with = "nullable")]
    pub iptables: KubeProxyIptablesConfiguration,
    /// IPVS mode settings.
    #[serde(default, deserialize_with = "nullable")]
    pub ipvs: KubeProxyIpvsConfiguration,
    /// nftables mode settings.
    #[serde(default, deserialize_with = "nullable")]
    pub nftables: KubeProxyNftablesConfiguration,
    /// Windows settings; accepted and kept, never used on Linux.
    #[serde(default, deserialize_with = "nullable")]
    pub winkernel: KubeProxyWinkernelConfiguration,
    /// `ClusterCIDR`, `NodeCIDR`, `BridgeInterface`, `InterfaceNamePrefix`, or empty.
    #[serde(default, deserialize_with = "nullable")]
    pub detect_local_mode: String,
    /// Interface settings for the interface-based local traffic modes.
    #[serde(default, deserialize_with = "nullable")]
    pub detect_local: DetectLocalConfiguration,
    /// Pod CIDR(s), comma-separated for a dual-stack pair.
    #[serde(rename = "clusterCIDR", default, deserialize_with = "nullable")]
    pub cluster_cidr: String,
    /// CIDRs, or the single keyword `primary`; empty means all local IPs.
    #[serde(default, deserialize_with = "nullable")]
    pub node_port_addresses: Vec<String>,
    /// oom_score_adj for the process, in [-1000, 1000].
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// Conntrack table sizing and timeouts.
    #[serde(default, deserialize_with = "nullable")]
    pub conntrack: KubeProxyConntrackConfiguration,
    /// How often informers resync from the API server.
    #[serde(default, deserialize_with = "nullable")]
    pub config_sync_period: GoDuration,
    /// Unused since the userspace proxy was removed; accepted and validated as upstream.
    #[serde(default, deserialize_with = "nullable")]
    pub port_range: String,
    /// Windows service integration; written only when true (Go `omitempty`).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub windows_run_as_service: bool,

    /// `udpIdleTimeout`: userspace proxy setting, removed upstream in v1.26.
    #[serde(default, skip_serializing)]
    pub(crate) udp_idle_timeout: Option<IgnoredAny>,
    /// `resourceContainer`: removed upstream in v1.16.
    #[serde(default, skip_serializing)]
    pub(crate) resource_container: Option<IgnoredAny>,
}

/// Treats an explicit `null` like an absent key: the type's zero value.
pub(crate) fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// Serializes an `f32` the way Go's encoder prints a float32: `5`, not `5.0`.
pub(crate) fn serialize_go_float<S: serde::Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    let wide = f64::from(*v);
    if wide.fract() == 0.0 && wide.abs() < 1e15 {
        s.serialize_i64(wide as i64)
    } else {
        s.serialize_f64(wide)
    }
}

impl KubeProxyConfiguration {
    /// Names of removed upstream keys this file contained, with the release
    /// that removed them, clearing the markers (they carry no setting);
    /// [`crate::load()`] turns them into warnings.
    pub(crate) fn take_legacy_fields(&mut self) -> Vec<(&'static str, &'static str)> {
        let mut found = Vec::new();
        if self.udp_idle_timeout.take().is_some() {
            found.push(("udpIdleTimeout", "v1.26"));
        }
        if self.resource_container.take().is_some() {
            found.push(("resourceContainer", "v1.16"));
        }
        if self.conntrack.max.take().is_some() {
            found.push(("conntrack.max", "v1.16"));
        }
        found
    }
}
