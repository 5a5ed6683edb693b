//! `logging`: component-base `LoggingConfiguration` (logs/api/v1, v0.35).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{is_false, nullable};
use crate::duration::GoDuration;

/// Log format, verbosity and flushing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoggingConfiguration {
    /// `text` (default) or `json`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub format: String,
    /// Maximum time between log flushes (default 5s).
    #[serde(default, deserialize_with = "nullable")]
    pub flush_frequency: FlushFrequency,
    /// klog-style verbosity threshold (`-v`).
    #[serde(default, deserialize_with = "nullable")]
    pub verbosity: u32,
    /// Per-file verbosity overrides (text format only).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub vmodule: Vec<VModuleItem>,
    /// Format-specific options.
    #[serde(default, deserialize_with = "nullable")]
    pub options: FormatOptions,
}

/// One `vmodule` entry: verbosity for files matching a glob.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VModuleItem {
    /// Base file name or glob, without `=` or `,`.
    #[serde(default, deserialize_with = "nullable")]
    pub file_pattern: String,
    /// Verbosity for matching files.
    #[serde(default, deserialize_with = "nullable")]
    pub verbosity: u32,
}

/// `options`: per-format settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FormatOptions {
    /// Options of the `text` format.
    #[serde(default, deserialize_with = "nullable")]
    pub text: OutputRoutingOptions,
    /// Options of the `json` format.
    #[serde(default, deserialize_with = "nullable")]
    pub json: OutputRoutingOptions,
}

/// Output stream routing shared by both formats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputRoutingOptions {
    /// Errors to stderr, info to stdout.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    pub split_stream: bool,
    /// Buffer size of the info stream, a Kubernetes quantity ("0", "64Ki").
    #[serde(default, deserialize_with = "nullable")]
    pub info_buffer_size: Quantity,
}

/// `flushFrequency`: a duration string, or (for old files) integer nanoseconds.
/// Printed back in the form it was read; defaulted values print as strings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushFrequency {
    /// The interval.
    pub duration: GoDuration,
    /// Serialize as "5s" rather than 5000000000.
    pub as_string: bool,
}

impl Serialize for FlushFrequency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.as_string {
            self.duration.serialize(serializer)
        } else {
            serializer.serialize_i64(self.duration.as_nanos())
        }
    }
}

impl<'de> Deserialize<'de> for FlushFrequency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FlushFrequency;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"5s\" or integer nanoseconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FlushFrequency, E> {
                let duration = GoDuration::parse(v).map_err(E::custom)?;
                Ok(FlushFrequency {
                    duration,
                    as_string: true,
                })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FlushFrequency, E> {
                Ok(FlushFrequency {
                    duration: GoDuration::from_nanos(v),
                    as_string: false,
                })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FlushFrequency, E> {
                let nanos = i64::try_from(v)
                    .map_err(|_| E::custom(format!("flush frequency {v} is out of range")))?;
                self.visit_i64(nanos)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A Kubernetes resource quantity kept as written ("0", "512", "1Ki", "3M").
/// Checked by [`crate::validation`]; numbers in the file are accepted and kept as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quantity(pub String);

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as \"0\" or \"64Ki\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Quantity {
    /// The value in bytes, or `None` if the text is not a quantity.
    ///
    /// Accepts what upstream's `resource.ParseQuantity` accepts in practice:
    /// an optional sign, a decimal number, then an optional binary suffix
    /// (Ki..Ei), decimal suffix (n, u, m, k, M, G, T, P, E) or exponent (e3).
    pub fn to_bytes(&self) -> Option<f64> {
        let s = self.0.as_str();
        let number_len = s
            .char_indices()
            .find(|(i, c)| {
                !(c.is_ascii_digit() || *c == '.' || (*i == 0 && (*c == '+' || *c == '-')))
            })
            .map_or(s.len(), |(i, _)| i);
        let (number, suffix) = s.split_at(number_len);
        let digits = number.trim_start_matches(['+', '-']);
        if digits.is_empty() || digits == "." || digits.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let factor = match suffix {
            "" => 1.0,
            "Ki" => 1024f64,
            "Mi" => 1024f64.powi(2),
            "Gi" => 1024f64.powi(3),
            "Ti" => 1024f64.powi(4),
            "Pi" => 1024f64.powi(5),
            "Ei" => 1024f64.powi(6),
            "n" => 1e-9,
            "u" => 1e-6,
            "m" => 1e-3,
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "P" => 1e15,
            "E" => 1e18,
            exp => {
                let e = exp.strip_prefix(['e', 'E'])?;
                let e: i32 = e.parse().ok()?;
                10f64.powi(e)
            }
        };
        Some(value * factor)
    }
}
