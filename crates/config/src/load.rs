//! Loading: read the `--config` file, decode it strictly, default it, apply
//! explicit flags, validate.
//!
//! Decoding follows upstream's `loadConfig` (cmd/kube-proxy/app/options.go),
//! which decodes strictly and, on a strict-only failure, retries leniently
//! and only logs a warning. We are stricter on purpose: an unknown key is an
//! error naming its path, except keys that older upstream releases defined
//! (`udpIdleTimeout`, `resourceContainer`, `conntrack.max`), which become
//! warnings so kubeadm-era files keep loading. Duplicate keys are errors.
//!
//! YAML is read straight into the typed structs with YAML 1.1 booleans, like
//! upstream's `sigs.k8s.io/yaml` does: `masqueradeAll: yes` is true, while
//! `mode: on` stays the string "on". A document whose first non-blank
//! character is `{` is read as JSON. Decoding stops at the first bad key or
//! value; validation then reports every remaining problem at once.

use crate::defaults::apply_defaults;
use crate::error::ConfigError;
use crate::flags::Flags;
use crate::overrides::apply_flags;
use crate::types::{API_VERSION, KIND, KubeProxyConfiguration};
use crate::validation::{feature_gate_warnings, validate};

/// A configuration ready to use, and the non-fatal problems met on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// Defaulted, flag-overridden and validated.
    pub config: KubeProxyConfiguration,
    /// One line each: removed upstream keys or feature gates, deprecated flags.
    pub warnings: Vec<String>,
}

/// Builds the effective configuration from the command line: the file named
/// by `--config` (if any), upstream defaults, then every flag given explicitly
/// (flags win over the file), then validation.
pub fn load(flags: &Flags) -> Result<Loaded, ConfigError> {
    let (mut config, mut warnings) = match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            decode(&text, &path.display().to_string())?
        }
        None => (KubeProxyConfiguration::default(), Vec::new()),
    };
    apply_defaults(&mut config);
    let (flag_errors, flag_warnings) = apply_flags(flags, &mut config);
    if !flag_errors.is_empty() {
        return Err(ConfigError::Flags(flag_errors));
    }
    warnings.extend(flag_warnings);
    finish(config, warnings)
}

/// Decodes, defaults and validates config file text without any flags.
/// `origin` names the source in messages (usually the file path).
pub fn parse_file_contents(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
    let (mut config, warnings) = decode(text, origin)?;
    apply_defaults(&mut config);
    finish(config, warnings)
}

fn finish(
    config: KubeProxyConfiguration,
    mut warnings: Vec<String>,
) -> Result<Loaded, ConfigError> {
    let errors = validate(&config);
    if !errors.is_empty() {
        return Err(ConfigError::Invalid(errors));
    }
    warnings.extend(feature_gate_warnings(&config));
    Ok(Loaded { config, warnings })
}

/// A decoding problem before it is tied to an origin.
enum Problem {
    /// The text is not well-formed YAML/JSON.
    Syntax(String),
    /// A key or value is wrong; `path` is where.
    Field(String),
}

/// Decodes file text into the wire struct, checks apiVersion/kind, and
/// returns warnings for removed upstream keys.
pub(crate) fn decode(
    text: &str,
    origin: &str,
) -> Result<(KubeProxyConfiguration, Vec<String>), ConfigError> {
    let decoded = if text.trim_start().starts_with('{') {
        decode_json(text)
    } else {
        decode_yaml(text)
    };
    let mut config = match decoded {
        Ok(config) => config,
        Err(Problem::Syntax(message)) => {
            return Err(ConfigError::Syntax {
                origin: origin.to_owned(),
                message,
            });
        }
        Err(Problem::Field(message)) => {
            return Err(ConfigError::Decode {
                origin: origin.to_owned(),
                errors: vec![message],
            });
        }
    };

    let mut errors = Vec::new();
    if config.api_version != API_VERSION {
        errors.push(type_meta_error(
            "apiVersion",
            &config.api_version,
            API_VERSION,
        ));
    }
    if config.kind != KIND {
        errors.push(type_meta_error("kind", &config.kind, KIND));
    }
    if !errors.is_empty() {
        return Err(ConfigError::Decode {
            origin: origin.to_owned(),
            errors,
        });
    }

    let warnings = config
        .take_legacy_fields()
        .into_iter()
        .map(|(field, release)| {
            format!(
                "config file {origin}: field {field:?} was removed from upstream kube-proxy in {release} and is ignored"
            )
        })
        .collect();
    Ok((config, warnings))
}

fn type_meta_error(field: &str, value: &str, want: &str) -> String {
    if value.is_empty() {
        format!("{field}: Required value: must be {want:?}")
    } else {
        format!("{field}: Unsupported value: {value:?}: supported values: {want:?}")
    }
}

fn decode_json(text: &str) -> Result<KubeProxyConfiguration, Problem> {
    let mut de = serde_json::Deserializer::from_str(text);
    let config: KubeProxyConfiguration =
        serde_path_to_error::deserialize(&mut de).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let message = inner.to_string();
            if inner.is_data() {
                Problem::Field(field_message(&path, &message))
            } else {
                Problem::Syntax(one_line(&message))
            }
        })?;
    de.end()
        .map_err(|e| Problem::Syntax(one_line(&e.to_string())))?;
    Ok(config)
}

fn decode_yaml(text: &str) -> Result<KubeProxyConfiguration, Problem> {
    let options = serde_saphyr::options! { with_snippet: false };
    let mut path = None;
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|err| {
            path = Some(err.path().to_string());
            err.into_inner()
        })
    });
    result.map_err(|err| {
        let err = err.without_snippet();
        if let serde_saphyr::Error::MultipleDocuments { .. } = err {
            let at = err
                .location()
                .map(|l| {
                    format!(
                        " (another starts at line {}, column {})",
                        l.line(),
                        l.column()
                    )
                })
                .unwrap_or_default();
            return Problem::Syntax(format!("the file must hold a single YAML document{at}"));
        }
        let message = one_line(&err.to_string());
        match (path, is_yaml_data_error(err)) {
            (Some(path), true) => Problem::Field(yaml_field_message(text, &path, err, &message)),
            _ => Problem::Syntax(message),
        }
    })
}

/// Errors raised by serde for a key or value, as opposed to YAML syntax.
fn is_yaml_data_error(err: &serde_saphyr::Error) -> bool {
    use serde_saphyr::Error as E;
    matches!(
        err,
        E::Message { .. }
            | E::Unexpected { .. }
            | E::SerdeInvalidType { .. }
            | E::SerdeInvalidValue { .. }
            | E::SerdeInvalidLength { .. }
            | E::SerdeUnknownVariant { .. }
            | E::SerdeUnknownField { .. }
            | E::SerdeMissingField { .. }
            | E::NullIntoString { .. }
            | E::InvalidScalar { .. }
            | E::NonFiniteFloat { .. }
            | E::DuplicateMappingKey { .. }
    )
}

fn yaml_field_message(text: &str, path: &str, err: &serde_saphyr::Error, message: &str) -> String {
    use serde_saphyr::Error as E;
    let location = err.location().filter(|l| l.line() > 0);
    let at = location
        .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
        .unwrap_or_default();
    // serde_path_to_error prints "?" for a position it cannot name.
    let path = path.trim_end_matches('?').trim_end_matches('.');
    match err {
        E::SerdeUnknownField {
            field, expected, ..
        } => unknown_field(path, field, expected) + &at,
        E::DuplicateMappingKey { key, .. } => {
            let key = key.as_deref().unwrap_or("?");
            let full = if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            };
            format!("duplicate key {full:?}{at}")
        }
        E::InvalidScalar { ty, .. } => {
            // The error does not carry the text; take the scalar from the source.
            let value = location
                .and_then(|l| scalar_at(text, l.line(), l.column()))
                .unwrap_or_default();
            field_message(path, &format!("invalid value {value:?}: expected {ty}{at}"))
        }
        _ => field_message(path, message),
    }
}

/// The plain scalar starting at 1-based `line`/`column`, without a trailing comment.
fn scalar_at(text: &str, line: u64, column: u64) -> Option<String> {
    let line = text
        .lines()
        .nth(usize::try_from(line.checked_sub(1)?).ok()?)?;
    let start = usize::try_from(column.checked_sub(1)?).ok()?;
    let rest: String = line.chars().skip(start).collect();
    let value = rest.split(" #").next().unwrap_or_default().trim();
    let value = value.trim_end_matches([',', '}', ']']).trim();
    Some(value.trim_matches(['"', '\'']).to_owned())
}

/// "path: message", or for unknown keys `unknown field "path.key"` plus a hint.
fn field_message(path: &str, message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let mut names = rest.split('`').step_by(2);
        let field = names.next().unwrap_or_default().to_owned();
        let expected: Vec<&str> = names.filter(|n| !n.is_empty()).collect();
        let at = message
            .rfind(" at line ")
            .map(|i| message[i..].replacen(" column", ", column", 1))
            .unwrap_or_default();
        return unknown_field(path, &field, &expected) + &at;
    }
    if path == "." || path.is_empty() {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    }
}

fn unknown_field(path: &str, field: &str, expected: &[&str]) -> String {
    // serde_path_to_error's path normally ends with the unknown key already.
    let full = if path == "." || path.is_empty() {
        field.to_owned()
    } else if path == field || path.ends_with(&format!(".{field}")) {
        path.to_owned()
    } else {
        format!("{path}.{field}")
    };
    let hint = expected
        .iter()
        .filter(|name| !name.starts_with('_'))
        .map(|name| (edit_distance(field, name), *name))
        .filter(|(d, name)| *d <= 2.max(name.len() / 4))
        .min()
        .map(|(_, name)| format!(" (did you mean {name:?}?)"))
        .unwrap_or_default();
    format!("unknown field {full:?}{hint}")
}

/// Levenshtein distance over chars, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            prev = current;
        }
    }
    row[b.len()]
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
