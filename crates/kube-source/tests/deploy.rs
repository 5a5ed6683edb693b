//! The deployment files in `deploy/`: every YAML document decodes strictly (unknown
//! fields fail, as `kubectl apply` with server-side field validation would) into its
//! k8s-openapi type, and the facts the proxy depends on hold.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Decodes strictly: a type error or an unknown field names the field path.
fn decode<T: DeserializeOwned>(value: Value, what: &str) -> T {
    let mut unknown = Vec::new();
    let mut on_unknown =
        |path: serde_ignored::Path<'_>| unknown.push(path.to_string().replace(".?", ""));
    let result: Result<T, _> = {
        let de = serde_ignored::Deserializer::new(value, &mut on_unknown);
        serde_path_to_error::deserialize(de)
    };
    let object = result.unwrap_or_else(|e| panic!("{what}: {}: {}", e.path(), e.inner()));
    assert!(unknown.is_empty(), "{what}: unknown fields {unknown:?}");
    object
}

#[derive(Default)]
struct Deploy {
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    config_maps: Vec<ConfigMap>,
    daemon_sets: Vec<DaemonSet>,
}

/// Every document of every `deploy/*.yaml`, decoded.
fn load() -> Deploy {
    let mut deploy = Deploy::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let options = serde_saphyr::options! { strict_booleans: true };
        let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(&text, options)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (i, doc) in docs.into_iter().enumerate() {
            let what = format!("{} document {}", file.display(), i + 1);
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            match (
                doc["apiVersion"].as_str().unwrap_or_default(),
                kind.as_str(),
            ) {
                ("v1", "ServiceAccount") => deploy.service_accounts.push(decode(doc, &what)),
                ("v1", "ConfigMap") => deploy.config_maps.push(decode(doc, &what)),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                    deploy.cluster_roles.push(decode(doc, &what))
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    deploy.bindings.push(decode(doc, &what))
                }
                ("apps/v1", "DaemonSet") => deploy.daemon_sets.push(decode(doc, &what)),
                (api, kind) => panic!("{what}: unexpected {api} {kind}"),
            }
        }
    }
    deploy
}

/// The ClusterRole grants exactly get/list/watch on Services, Nodes and
/// EndpointSlices and create/patch on Events (core and events.k8s.io), and is bound
/// to the DaemonSet's service account.
#[test]
fn rbac_grants_exactly_what_the_proxy_needs() {
    let d = load();
    assert_eq!(d.cluster_roles.len(), 1);
    let mut grants = BTreeSet::new();
    for rule in d.cluster_roles[0].rules.as_ref().unwrap() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.as_ref().unwrap() {
            for resource in rule.resources.as_ref().unwrap() {
                for verb in &rule.verbs {
                    grants.insert(format!("{group}/{resource}:{verb}"));
                }
            }
        }
    }
    let mut expected = BTreeSet::new();
    for (group, resource) in [
        ("", "services"),
        ("", "nodes"),
        ("discovery.k8s.io", "endpointslices"),
        ("networking.k8s.io", "servicecidrs"),
    ] {
        for verb in ["get", "list", "watch"] {
            expected.insert(format!("{group}/{resource}:{verb}"));
        }
    }
    for group in ["", "events.k8s.io"] {
        for verb in ["create", "patch"] {
            expected.insert(format!("{group}/events:{verb}"));
        }
    }
    assert_eq!(grants, expected);

    let sa = &d.service_accounts[0];
    let binding = &d.bindings[0];
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        Some(&binding.role_ref.name),
        d.cluster_roles[0].metadata.name.as_ref()
    );
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(Some(&subject.name), sa.metadata.name.as_ref());
    assert_eq!(subject.namespace, sa.metadata.namespace);
    let pod = d.daemon_sets[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pod.service_account_name, sa.metadata.name);
}

/// The DaemonSet runs on every node in the host network namespace, as a
/// node-critical privileged pod, with the mounts iptables needs, probes on the
/// health port and its node name from the downward API.
#[test]
fn daemonset_facts() {
    let d = load();
    assert_eq!(d.daemon_sets.len(), 1);
    let ds = &d.daemon_sets[0];
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let tolerations = pod.tolerations.as_ref().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "tolerates every taint"
    );
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    let caps: BTreeSet<&str> = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.add.as_ref())
        .map(|a| a.iter().map(String::as_str).collect())
        .unwrap_or_default();
    assert!(
        sc.privileged == Some(true)
            || ["NET_ADMIN", "NET_RAW", "SYS_MODULE"]
                .iter()
                .all(|c| caps.contains(c)),
        "needs privileged or NET_ADMIN+NET_RAW+SYS_MODULE"
    );

    let args = c.args.as_ref().unwrap();
    assert!(
        args.contains(&"--hostname-override=$(NODE_NAME)".to_string()),
        "{args:?}"
    );
    let config_arg = args
        .iter()
        .find_map(|a| a.strip_prefix("--config="))
        .unwrap();
    let env = c.env.as_ref().unwrap();
    let node_name = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    let field = node_name
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(field.field_path, "spec.nodeName");

    for (probe, path) in [
        (&c.readiness_probe, "/healthz"),
        (&c.liveness_probe, "/livez"),
    ] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::Int(10256));
    }

    // Mounts: /lib/modules read-only and the host's xtables lock.
    let volumes = pod.volumes.as_ref().unwrap();
    let mounts = c.volume_mounts.as_ref().unwrap();
    let host_path_of = |mount_path: &str| {
        let m = mounts.iter().find(|m| m.mount_path == mount_path).unwrap();
        let v = volumes.iter().find(|v| v.name == m.name).unwrap();
        (m.read_only, v.host_path.clone())
    };
    let (ro, hp) = host_path_of("/lib/modules");
    assert_eq!(ro, Some(true));
    assert_eq!(hp.unwrap().path, "/lib/modules");
    let (_, hp) = host_path_of("/run/xtables.lock");
    let hp = hp.unwrap();
    assert_eq!(hp.path, "/run/xtables.lock");
    assert_eq!(hp.type_.as_deref(), Some("FileOrCreate"));

    // --config points into the mounted ConfigMap, at a key it has.
    let (dir, file) = config_arg.rsplit_once('/').unwrap();
    let m = mounts.iter().find(|m| m.mount_path == dir).unwrap();
    let v = volumes.iter().find(|v| v.name == m.name).unwrap();
    let cm_name = v.config_map.as_ref().unwrap().name.clone();
    let cm = d
        .config_maps
        .iter()
        .find(|cm| cm.metadata.name.as_ref() == Some(&cm_name))
        .unwrap_or_else(|| panic!("ConfigMap {cm_name} not in deploy/"));
    assert!(cm.data.as_ref().unwrap().contains_key(file));

    // Everything lives in one namespace.
    assert_eq!(ds.metadata.namespace.as_deref(), Some("kube-system"));
    assert_eq!(cm.metadata.namespace.as_deref(), Some("kube-system"));
}

/// The ConfigMap's KubeProxyConfiguration loads with kube-proxy-rs' own config loader
/// (strict, validated), in iptables mode, with the kubeconfig the DaemonSet mounts.
#[test]
fn configmap_holds_a_valid_iptables_configuration() {
    let d = load();
    let cm = d
        .config_maps
        .iter()
        .find(|cm| cm.metadata.name.as_deref() == Some("kube-proxy-rs"))
        .unwrap();
    let text = &cm.data.as_ref().unwrap()["config.conf"];
    let loaded = kpr_config::parse_file_contents(text, "deploy/configmap.yaml config.conf")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.config.mode().as_str(), "iptables");
    let kubeconfig = &loaded.config.client_connection.kubeconfig;
    assert_eq!(kubeconfig, "/var/lib/kube-proxy/kubeconfig.conf");
    let pod = d.daemon_sets[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let mount = pod.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| kubeconfig.starts_with(&format!("{}/", m.mount_path)))
        .expect("the kubeconfig's directory is mounted");
    let volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    let source = volume.config_map.as_ref().unwrap();
    assert_eq!(source.name, "kube-proxy", "kubeadm's ConfigMap");
    assert_eq!(source.items.as_ref().unwrap()[0].key, "kubeconfig.conf");
}

/// The image builds the proxy and ships the kernel tools it drives (checked as text:
/// there is no container engine here).
#[test]
fn dockerfile_facts() {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    assert!(text.contains("FROM debian:bookworm-slim"));
    assert!(text.contains("cargo build --release --locked -p kube-proxy-rs"));
    for package in ["iptables", "nftables", "ipset", "conntrack"] {
        assert!(
            text.split_whitespace().any(|w| w == package),
            "{package} not installed"
        );
    }
    let entrypoint = std::fs::read_to_string(deploy_dir().join("entrypoint.sh")).unwrap();
    assert!(entrypoint.contains("exec /usr/local/bin/kube-proxy-rs \"$@\""));
}
