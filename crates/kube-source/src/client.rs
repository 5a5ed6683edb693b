//! Building the API client the way upstream's `createClient`
//! (`cmd/kube-proxy/app/server.go`) does:
//!
//! - neither a kubeconfig nor `--master`: the in-cluster service-account credentials
//!   (`KUBERNETES_SERVICE_HOST`/`_PORT`, the mounted token and CA; kube-rs reads them);
//! - otherwise the kubeconfig file named (and only that file: like upstream's
//!   `ClientConfigLoadingRules{ExplicitPath}`, `$KUBECONFIG` and `~/.kube/config` are not
//!   consulted), with its server replaced by `--master` when given; `--master` alone
//!   means that URL with no credentials.
//!
//! `clientConnection.qps`/`burst` are honoured by a token bucket in front of every
//! request (the `layer` module). kube-rs speaks JSON only: a `contentType` or
//! `acceptContentTypes` asking for protobuf (upstream's default content type is
//! `application/vnd.kubernetes.protobuf`) is served as JSON, with a note when the
//! configuration explicitly asks for something other than JSON. TLS is rustls.

use std::path::{Path, PathBuf};

use kpr_config::types::ClientConnectionConfiguration;
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::connectivity::Connectivity;
use crate::error::ClientError;
use crate::layer::ApiLayer;

/// Upstream's default `clientConnection.contentType`.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// How to reach the API server: `clientConnection` plus the `--master` flag.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientSettings {
    /// `--kubeconfig` / `clientConnection.kubeconfig`; `None` or empty for none.
    pub kubeconfig: Option<PathBuf>,
    /// `--master`: overrides the kubeconfig's server.
    pub master: Option<String>,
    /// `clientConnection.qps` (requests per second; 0 or less: unlimited).
    pub qps: f32,
    /// `clientConnection.burst`.
    pub burst: i32,
    /// `clientConnection.contentType`.
    pub content_type: String,
    /// `clientConnection.acceptContentTypes`.
    pub accept_content_types: String,
}

impl ClientSettings {
    /// Settings from the (defaulted) `clientConnection` section and `--master`.
    pub fn from_config(cc: &ClientConnectionConfiguration, master: Option<&str>) -> Self {
        Self {
            kubeconfig: Some(PathBuf::from(&cc.kubeconfig)).filter(|p| !p.as_os_str().is_empty()),
            master: master.map(str::to_owned).filter(|m| !m.is_empty()),
            qps: cc.qps,
            burst: cc.burst,
            content_type: cc.content_type.clone(),
            accept_content_types: cc.accept_content_types.clone(),
        }
    }

    /// Notes on settings kube-rs cannot honour (one line each, for the log).
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for (field, value) in [
            ("contentType", &self.content_type),
            ("acceptContentTypes", &self.accept_content_types),
        ] {
            let explicit_non_json = !value.is_empty()
                && value != PROTOBUF_CONTENT_TYPE
                && !value.split(',').all(|t| t.trim() == "application/json");
            if explicit_non_json {
                notes.push(format!(
                    "clientConnection.{field} {value:?}: the API client speaks JSON only; using application/json"
                ));
            }
        }
        notes
    }
}

/// A client ready for [`crate::spawn`].
#[derive(Clone)]
pub struct ApiClient {
    /// The kube-rs client (rate limited, connectivity tracked).
    pub client: kube::Client,
    /// Whether the API server is currently reachable.
    pub connectivity: Connectivity,
    /// The API server URL in use.
    pub url: String,
    /// Notes about settings that could not be honoured (see [`ClientSettings::notes`]).
    pub notes: Vec<String>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("url", &self.url)
            .field("connected", &self.connectivity.is_connected())
            .finish_non_exhaustive()
    }
}

/// Builds the client. Nothing is sent to the API server yet.
pub async fn connect(settings: &ClientSettings) -> Result<ApiClient, ClientError> {
    let config = kube_config(settings).await?;
    let url = config.cluster_url.to_string();
    let connectivity = Connectivity::new();
    let builder = ClientBuilder::try_from(config).map_err(|source| ClientError::Build {
        url: url.clone(),
        source,
    })?;
    let client = builder
        .with_layer(&ApiLayer::new(
            settings.qps,
            settings.burst,
            connectivity.clone(),
        ))
        .build();
    Ok(ApiClient {
        client,
        connectivity,
        url,
        notes: settings.notes(),
    })
}

/// The kube-rs configuration for `settings` (see the module documentation).
pub async fn kube_config(settings: &ClientSettings) -> Result<kube::Config, ClientError> {
    match (&settings.kubeconfig, &settings.master) {
        (None, None) => {
            kube::Config::incluster().map_err(|source| ClientError::InCluster { source })
        }
        (Some(path), master) => {
            let mut config = from_kubeconfig(path).await?;
            if let Some(master) = master {
                config.cluster_url = parse_master(master, true)?;
            }
            Ok(config)
        }
        (None, Some(master)) => Ok(kube::Config::new(parse_master(master, false)?)),
    }
}

async fn from_kubeconfig(path: &Path) -> Result<kube::Config, ClientError> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| ClientError::Kubeconfig {
        path: path.to_path_buf(),
        source,
    })?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| ClientError::KubeconfigContents {
            path: path.to_path_buf(),
            source,
        })
}

/// Parses `--master`. As client-go, a URL without a scheme gets `https` when TLS
/// settings come with it (a kubeconfig) and `http` otherwise.
fn parse_master(value: &str, tls: bool) -> Result<http::Uri, ClientError> {
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else {
        format!("{}://{value}", if tls { "https" } else { "http" })
    };
    let uri: http::Uri =
        with_scheme
            .parse()
            .map_err(|e: http::uri::InvalidUri| ClientError::Master {
                value: value.to_string(),
                reason: e.to_string(),
            })?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(ClientError::Master {
            value: value.to_string(),
            reason: "want http(s)://host[:port]".to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--master` gets a scheme as client-go gives it, and junk is rejected.
    #[test]
    fn master_urls() {
        assert_eq!(
            parse_master("10.0.0.1:6443", true).unwrap().to_string(),
            "https://10.0.0.1:6443/"
        );
        assert_eq!(
            parse_master("127.0.0.1:8080", false).unwrap().to_string(),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(
            parse_master("https://api.example:6443", false)
                .unwrap()
                .scheme_str(),
            Some("https")
        );
        assert!(parse_master("ftp://x", false).is_err());
        assert!(parse_master("http://", false).is_err());
    }

    /// Upstream's protobuf default is silently served as JSON; an explicit other
    /// type gets a note.
    #[test]
    fn content_type_notes() {
        let mut s = ClientSettings {
            content_type: PROTOBUF_CONTENT_TYPE.into(),
            ..Default::default()
        };
        assert!(s.notes().is_empty());
        s.content_type = "application/json".into();
        assert!(s.notes().is_empty());
        s.accept_content_types = "application/vnd.kubernetes.protobuf,application/json".into();
        let notes = s.notes();
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("acceptContentTypes"), "{notes:?}");
    }

    /// `clientConnection` maps field by field; empty strings mean "not given".
    #[test]
    fn from_client_connection() {
        let cc = ClientConnectionConfiguration {
            kubeconfig: "/var/lib/kube-proxy/kubeconfig.conf".into(),
            qps: 5.0,
            burst: 10,
            content_type: PROTOBUF_CONTENT_TYPE.into(),
            ..Default::default()
        };
        let s = ClientSettings::from_config(&cc, Some(""));
        assert_eq!(
            s.kubeconfig.as_deref(),
            Some(Path::new("/var/lib/kube-proxy/kubeconfig.conf"))
        );
        assert_eq!(s.master, None);
        assert_eq!((s.qps, s.burst), (5.0, 10));
        let s = ClientSettings::from_config(
            &ClientConnectionConfiguration::default(),
            Some("http://m:1"),
        );
        assert_eq!(s.kubeconfig, None);
        assert_eq!(s.master.as_deref(), Some("http://m:1"));
    }

    /// A kubeconfig's server, CA-less TLS and token are used; `--master` replaces only
    /// the server.
    #[tokio::test]
    async fn kubeconfig_with_master_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig.conf");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://10.9.8.7:6443\n\
             contexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n\
             users:\n- name: u\n  user:\n    token: abc\n",
        )
        .unwrap();
        let mut s = ClientSettings {
            kubeconfig: Some(path.clone()),
            ..Default::default()
        };
        let c = kube_config(&s).await.unwrap();
        assert_eq!(c.cluster_url.to_string(), "https://10.9.8.7:6443/");
        s.master = Some("https://192.0.2.1:443".into());
        let c = kube_config(&s).await.unwrap();
        assert_eq!(c.cluster_url.to_string(), "https://192.0.2.1:443/");
        s.kubeconfig = Some(dir.path().join("missing.conf"));
        let err = kube_config(&s).await.unwrap_err();
        assert!(err.to_string().contains("missing.conf"), "{err}");
    }
}
