//! Errors of this crate: every message names the field path (or flag) and the
//! bad value, one line per problem, in the shape of upstream's `field.Error`
//! ("iptables.masqueradeBit: Invalid value: 32: must be within the range [0, 31]").

use std::fmt;
use std::path::PathBuf;

/// What kind of problem a [`FieldError`] reports (upstream's `field.ErrorType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// The value is malformed or out of range.
    Invalid,
    /// The value is not one of a fixed set; carries the set.
    Unsupported(Vec<String>),
    /// A value is needed and missing.
    Required,
    /// The value is not allowed in this combination.
    Forbidden,
}

/// One problem with one field of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Wire path, e.g. `iptables.masqueradeBit` or `nodePortAddresses[1]`.
    pub path: String,
    /// Kind of problem.
    pub kind: FieldErrorKind,
    /// The bad value, already rendered (strings quoted, numbers bare).
    pub value: String,
    /// Why it is wrong.
    pub detail: String,
}

impl FieldError {
    /// An `Invalid value` error; `value` is printed as given (quote strings with [`quote`]).
    pub fn invalid(
        path: impl Into<String>,
        value: impl fmt::Display,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            path: path.into(),
            kind: FieldErrorKind::Invalid,
            value: value.to_string(),
            detail: detail.into(),
        }
    }

    /// An `Unsupported value` error for a string outside `supported`.
    pub fn unsupported(path: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        FieldError {
            path: path.into(),
            kind: FieldErrorKind::Unsupported(supported.iter().map(|s| (*s).to_owned()).collect()),
            value: quote(value),
            detail: String::new(),
        }
    }

    /// A `Required value` error.
    pub fn required(path: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            kind: FieldErrorKind::Required,
            value: String::new(),
            detail: detail.into(),
        }
    }

    /// A `Forbidden` error.
    pub fn forbidden(path: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            kind: FieldErrorKind::Forbidden,
            value: String::new(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FieldErrorKind::Invalid => {
                write!(
                    f,
                    "{}: Invalid value: {}: {}",
                    self.path, self.value, self.detail
                )
            }
            FieldErrorKind::Unsupported(set) => {
                let set: Vec<String> = set.iter().map(|s| quote(s)).collect();
                write!(
                    f,
                    "{}: Unsupported value: {}: supported values: {}",
                    self.path,
                    self.value,
                    set.join(", ")
                )
            }
            FieldErrorKind::Required => write!(f, "{}: Required value: {}", self.path, self.detail),
            FieldErrorKind::Forbidden => write!(f, "{}: Forbidden: {}", self.path, self.detail),
        }
    }
}

/// One bad command-line flag value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError {
    /// The flag as spelled in `--help`, e.g. `--proxy-mode`.
    pub flag: String,
    /// The value given.
    pub value: String,
    /// Why it is wrong.
    pub reason: String,
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: invalid value {}: {}",
            self.flag,
            quote(&self.value),
            self.reason
        )
    }
}

/// Everything that can stop [`crate::load()`]. `Display` prints one line per
/// problem, ready for the binary to print before exiting 1.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    #[error("config file {}: {source}", path.display())]
    Read {
        /// The path given to `--config`.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not well-formed YAML/JSON; the message carries line and column.
    #[error("config file {origin}: {message}")]
    Syntax {
        /// File name (or other origin label).
        origin: String,
        /// Parser message, on one line.
        message: String,
    },
    /// A key is unknown, a value has the wrong type, or apiVersion/kind are wrong.
    #[error("{}", lines(.errors.iter().map(|e| format!("config file {origin}: {e}"))))]
    Decode {
        /// File name (or other origin label).
        origin: String,
        /// The problems, each naming a field path.
        errors: Vec<String>,
    },
    /// One or more command-line flags have bad values.
    #[error("{}", lines(.0.iter()))]
    Flags(Vec<FlagError>),
    /// The merged, defaulted configuration breaks upstream's validation rules.
    #[error("{}", lines(.0.iter().map(|e| format!("invalid configuration: {e}"))))]
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    /// The problems as separate lines (the same text `Display` joins with newlines).
    pub fn lines(&self) -> Vec<String> {
        self.to_string().lines().map(str::to_owned).collect()
    }
}

fn lines<I: IntoIterator<Item = T>, T: fmt::Display>(items: I) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Quotes a string like Go's `%q` for printable ASCII (Rust escapes the rest).
pub fn quote(s: &str) -> String {
    format!("{s:?}")
}
