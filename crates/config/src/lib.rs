//! Configuration of kube-proxy-rs, compatible with upstream kube-proxy v1.35:
//! the command-line flags and the `KubeProxyConfiguration` file
//! (`kubeproxy.config.k8s.io/v1alpha1`, YAML or JSON), upstream's defaults
//! and validation, and typed accessors for the rest of the program.
//!
//! ```no_run
//! let flags = kpr_config::parse_flags(std::env::args_os()).unwrap_or_else(|e| e.exit());
//! match kpr_config::load(&flags) {
//!     Ok(loaded) => {
//!         for w in &loaded.warnings {
//!             eprintln!("warning: {w}");
//!         }
//!         println!("{}", loaded.config.mode().as_str());
//!     }
//!     Err(e) => {
//!         eprintln!("{e}");
//!         std::process::exit(1);
//!     }
//! }
//! ```
//!
//! # Pipeline
//!
//! [`load()`]: read `--config` (strict decoding with field paths) →
//! [`defaults`] → explicit flags (`overrides`) → [`validation`]. Every error names the field path or flag and the bad value,
//! one line per problem ([`ConfigError`]).
//!
//! # Upstream facts used
//!
//! Read from upstream, then written anew here (no upstream code copied):
//! - Fields: `staging/src/k8s.io/kube-proxy/config/v1alpha1/types.go` at
//!   kubernetes/kube-proxy tag v0.35.7 (commit 97f452950b3a); component-base
//!   v0.35.7 `config/v1alpha1` (`ClientConnectionConfiguration`) and
//!   `logs/api/v1` (`LoggingConfiguration`, its flags, defaults, validation).
//!   Fields added after v1.35 (`iptables.snatNodeInternalIP`, the
//!   `localhost` / `all` keywords of `nodePortAddresses`) are not accepted.
//! - Removed fields, from that repository's history: `udpIdleTimeout`
//!   (removed with the userspace proxy, v1.26), `resourceContainer` and
//!   `conntrack.max` (v1.16).
//! - Defaults: `pkg/proxy/apis/config/v1alpha1/defaults.go`
//!   (`SetDefaults_KubeProxyConfiguration`, unchanged since nftables was added).
//! - Validation: `pkg/proxy/apis/config/validation/validation.go` (v1.31+ shape).
//! - Flags and load behaviour: `cmd/kube-proxy/app/options.go` (`AddFlags`,
//!   `Complete`, `processV1Alpha1Flags`, `loadConfig`), `server.go`
//!   (`NewProxyCommand`), and the v1alpha1 → internal conversion that picks
//!   the sync periods and masquerade settings by mode.
//!
//! # Deliberate differences from upstream
//!
//! - **Explicit flags win over the file.** Upstream ignores most flags when
//!   `--config` is given; here any flag given on the command line overrides
//!   the file, and flags not given leave it alone.
//! - **Unknown keys are errors** (upstream falls back to lenient decoding and
//!   logs); keys older upstream releases had are warnings.
//! - **Unknown feature gates are kept, not rejected**; gates removed upstream
//!   before v1.35 (e.g. `SupportIPVSProxyMode`) produce a warning.
//! - Validation checks every section whatever the mode, and requires a known
//!   IPVS scheduler ([`validation`]).
//! - `--healthz-bind-address=""` / `--metrics-bind-address=""` disable the
//!   server, as upstream's help text says (upstream's code ignores them).
//! - Windows-only flags (`--windows-service`, `--source-vip`, ...) are not
//!   accepted, as on upstream Linux builds; the `winkernel` section is kept.
//! - `/configz` output is the v1alpha1 wire shape (what `--write-config-to`
//!   writes), not upstream's internal struct.
#![forbid(unsafe_code)]

mod address;
pub mod defaults;
pub mod duration;
pub mod error;
pub mod flags;
mod load;
mod overrides;
mod scalars;
pub mod settings;
pub mod types;
pub mod validation;

pub use duration::{DurationError, GoDuration};
pub use error::{ConfigError, FieldError, FieldErrorKind, FlagError};
pub use flags::{Flags, command, normalize_args, parse_flags};
pub use load::{Loaded, load, parse_file_contents};
pub use settings::{
    ConntrackSettings, DetectLocal, IpvsScheduler, IpvsSettings, NodePortAddresses, ProxyMode,
};
pub use types::KubeProxyConfiguration;
