//! Go-compatible durations (`metav1.Duration` on the wire).
//!
//! Upstream writes every duration in the config file as the text of Go's
//! `time.Duration.String()` ("15m0s", "1h0m0s", "300ms", "0s") and reads it
//! with `time.ParseDuration` ("1.5h", "1h2m3.5s", "0", "-1s"). `/configz` and
//! `--write-config-to` must print exactly Go's spelling, which general
//! duration crates do not (900 s is "15m0s" in Go, "15m" elsewhere), hence
//! this small hand-written module.
//!
//! Durations are signed nanoseconds, like Go's: a negative value parses, so
//! validation can report it by name ("must be greater than or equal to 0").

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A signed duration with nanosecond resolution, parsed and printed like Go's
/// `time.Duration`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(i64);

/// Why a duration string was rejected; the text follows Go's `time` package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not of the form `[-+]<number><unit>...`.
    #[error("invalid duration {0:?}")]
    Invalid(String),
    /// A number without a unit, e.g. `15` (only `0` may omit it).
    #[error("missing unit in duration {0:?}")]
    MissingUnit(String),
    /// A unit other than ns, us, µs, ms, s, m, h.
    #[error("unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole input.
        input: String,
    },
    /// The value does not fit in 64-bit nanoseconds (about 292 years).
    #[error("duration {0:?} is out of range")]
    Overflow(String),
}

const NANOSECOND: u64 = 1;
const MICROSECOND: u64 = 1_000;
const MILLISECOND: u64 = 1_000_000;
const SECOND: u64 = 1_000_000_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
/// Magnitude of `i64::MIN`: the largest magnitude a negative duration may have.
const MAX_MAGNITUDE: u64 = 1 << 63;

impl GoDuration {
    /// The zero duration, printed "0s".
    pub const ZERO: GoDuration = GoDuration(0);

    /// A duration of `nanos` nanoseconds.
    pub const fn from_nanos(nanos: i64) -> Self {
        GoDuration(nanos)
    }

    /// A duration of `secs` seconds (saturating at the 64-bit range).
    pub const fn from_secs(secs: i64) -> Self {
        GoDuration(secs.saturating_mul(SECOND as i64))
    }

    /// Converts a std duration, saturating at `i64::MAX` nanoseconds.
    pub fn from_std(d: Duration) -> Self {
        GoDuration(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    /// The value in nanoseconds.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// True for the zero duration.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The std duration, or `None` when negative.
    pub fn to_std(self) -> Option<Duration> {
        u64::try_from(self.0).ok().map(Duration::from_nanos)
    }

    /// The std duration, with negative values clamped to zero.
    pub fn to_std_saturating(self) -> Duration {
        self.to_std().unwrap_or(Duration::ZERO)
    }

    /// Parses Go's duration syntax: an optional sign, then one or more
    /// `<number><unit>` pairs (units ns, us, µs, μs, ms, s, m, h; the number
    /// may have a fraction), or the bare string `0`.
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let invalid = || DurationError::Invalid(input.to_owned());
        let (negative, mut rest) = match input.as_bytes().first() {
            Some(b'-') => (true, &input[1..]),
            Some(b'+') => (false, &input[1..]),
            _ => (false, input),
        };
        if rest == "0" {
            return Ok(GoDuration::ZERO);
        }
        if rest.is_empty() {
            return Err(invalid());
        }
        let mut total: u64 = 0;
        while !rest.is_empty() {
            let (whole, after_whole) = split_digits(rest);
            let whole_digits = rest.len() - after_whole.len();
            rest = after_whole;
            let mut frac_value: u64 = 0;
            let mut frac_scale: f64 = 1.0;
            let mut frac_digits = 0;
            if let Some(after_dot) = rest.strip_prefix('.') {
                let digits_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                for b in after_dot.as_bytes()[..digits_len].iter() {
                    // Like Go, digits past the 64-bit range only lose precision.
                    if let Some(v) = frac_value
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(b - b'0')))
                    {
                        frac_value = v;
                        frac_scale *= 10.0;
                    }
                }
                frac_digits = digits_len;
                rest = &after_dot[digits_len..];
            }
            if whole_digits == 0 && frac_digits == 0 {
                return Err(invalid());
            }
            let whole = whole.ok_or_else(|| DurationError::Overflow(input.to_owned()))?;
            let unit_len = rest
                .char_indices()
                .find(|(_, c)| *c == '.' || c.is_ascii_digit())
                .map_or(rest.len(), |(i, _)| i);
            let (unit_text, after_unit) = rest.split_at(unit_len);
            if unit_text.is_empty() {
                return Err(DurationError::MissingUnit(input.to_owned()));
            }
            let unit = unit_nanos(unit_text).ok_or_else(|| DurationError::UnknownUnit {
                unit: unit_text.to_owned(),
                input: input.to_owned(),
            })?;
            rest = after_unit;
            let overflow = || DurationError::Overflow(input.to_owned());
            let mut value = whole.checked_mul(unit).ok_or_else(overflow)?;
            if frac_value > 0 {
                // Truncation toward zero, as Go does for the fractional part.
                let extra = (frac_value as f64 * (unit as f64 / frac_scale)) as u64;
                value = value.checked_add(extra).ok_or_else(overflow)?;
            }
            total = total.checked_add(value).ok_or_else(overflow)?;
            if total > MAX_MAGNITUDE {
                return Err(overflow());
            }
        }
        if negative {
            // total <= 2^63, so the negation always fits.
            Ok(GoDuration(0i64.wrapping_sub_unsigned(total)))
        } else {
            i64::try_from(total)
                .map(GoDuration)
                .map_err(|_| DurationError::Overflow(input.to_owned()))
        }
    }
}

/// Leading ASCII digits as a number (`None` on overflow) and the remainder.
fn split_digits(s: &str) -> (Option<u64>, &str) {
    let len = s.bytes().take_while(u8::is_ascii_digit).count();
    let value = s.as_bytes()[..len].iter().try_fold(0u64, |acc, b| {
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    });
    (value, &s[len..])
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => NANOSECOND,
        "us" | "\u{b5}s" | "\u{3bc}s" => MICROSECOND,
        "ms" => MILLISECOND,
        "s" => SECOND,
        "m" => MINUTE,
        "h" => HOUR,
        _ => return None,
    })
}

/// Writes `value / 10^digits` with the fraction's trailing zeros removed.
fn write_fraction(out: &mut String, value: u64, digits: u32) {
    let scale = 10u64.pow(digits);
    out.push_str(&(value / scale).to_string());
    let frac = value % scale;
    if frac != 0 {
        let text = format!("{frac:0width$}", width = digits as usize);
        out.push('.');
        out.push_str(text.trim_end_matches('0'));
    }
}

impl fmt::Display for GoDuration {
    /// Go's `Duration.String()`: "0s", "1.5µs", "300ms", "30s", "15m0s", "1h0m0s".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        if self.0 < 0 {
            out.push('-');
        }
        let u = self.0.unsigned_abs();
        if u == 0 {
            out.push_str("0s");
        } else if u < MICROSECOND {
            out.push_str(&format!("{u}ns"));
        } else if u < MILLISECOND {
            write_fraction(&mut out, u, 3);
            out.push_str("\u{b5}s");
        } else if u < SECOND {
            write_fraction(&mut out, u, 6);
            out.push_str("ms");
        } else {
            let hours = u / HOUR;
            let minutes = (u % HOUR) / MINUTE;
            let secs_nanos = u % MINUTE;
            if hours > 0 {
                out.push_str(&format!("{hours}h"));
            }
            if hours > 0 || minutes > 0 {
                out.push_str(&format!("{minutes}m"));
            }
            write_fraction(&mut out, secs_nanos, 9);
            out.push('s');
        }
        f.write_str(&out)
    }
}

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GoDuration::parse(s)
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        GoDuration::from_std(d)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    /// Only strings, like `metav1.Duration`; a bare number is a type error.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"30s\" or \"1h2m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GoDuration, E> {
                GoDuration::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> i64 {
        match GoDuration::parse(s) {
            Ok(v) => v.as_nanos(),
            Err(e) => panic!("{s}: {e}"),
        }
    }

    /// Every spelling upstream config files use parses to the same nanoseconds Go gives.
    #[test]
    fn parses_go_spellings() {
        let s = SECOND as i64;
        for (text, nanos) in [
            ("0", 0),
            ("0s", 0),
            ("-0", 0),
            ("+5s", 5 * s),
            ("15m0s", 900 * s),
            ("1h2m3.5s", 3723 * s + s / 2),
            ("1.5h", 5400 * s),
            ("300ms", 300_000_000),
            ("1us", 1_000),
            ("1\u{b5}s", 1_000),
            ("1\u{3bc}s", 1_000),
            ("7ns", 7),
            (".5s", s / 2),
            ("5.s", 5 * s),
            ("-1s", -s),
            ("24h0m0s", 86_400 * s),
            ("2562047h47m16.854775807s", i64::MAX),
            ("-2562047h47m16.854775808s", i64::MIN),
        ] {
            assert_eq!(d(text), nanos, "{text}");
        }
    }

    /// Malformed strings are rejected with Go's reasons.
    #[test]
    fn rejects_malformed() {
        for (text, want) in [
            ("", "invalid duration \"\""),
            ("15", "missing unit in duration \"15\""),
            ("1x", "unknown unit \"x\" in duration \"1x\""),
            ("s", "invalid duration \"s\""),
            (".s", "invalid duration \".s\""),
            ("1s ", "unknown unit \"s \" in duration \"1s \""),
            ("-", "invalid duration \"-\""),
            (
                "2562047h47m16.854775808s",
                "duration \"2562047h47m16.854775808s\" is out of range",
            ),
            (
                "99999999999999999999s",
                "duration \"99999999999999999999s\" is out of range",
            ),
        ] {
            match GoDuration::parse(text) {
                Ok(v) => panic!("{text:?} parsed as {v:?}"),
                Err(e) => assert_eq!(e.to_string(), want),
            }
        }
    }

    /// Printing matches Go's `Duration.String()`.
    #[test]
    fn formats_like_go() {
        let s = SECOND as i64;
        for (nanos, text) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5\u{b5}s"),
            (300_000_000, "300ms"),
            (1_000_000_001, "1.000000001s"),
            (30 * s, "30s"),
            (900 * s, "15m0s"),
            (3600 * s, "1h0m0s"),
            (86_400 * s, "24h0m0s"),
            (3723 * s + s / 2, "1h2m3.5s"),
            (-s, "-1s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ] {
            assert_eq!(GoDuration::from_nanos(nanos).to_string(), text);
        }
    }

    proptest::proptest! {
        /// Printing then parsing gives back the same value, for every i64.
        #[test]
        fn round_trips(nanos in proptest::prelude::any::<i64>()) {
            let text = GoDuration::from_nanos(nanos).to_string();
            proptest::prop_assert_eq!(GoDuration::parse(&text), Ok(GoDuration::from_nanos(nanos)));
        }

        /// Arbitrary text never panics the parser.
        #[test]
        fn never_panics(text in "\\PC{0,24}") {
            let _ = GoDuration::parse(&text);
        }

        /// Digit/unit soup never panics either (more likely to reach the arithmetic).
        #[test]
        fn never_panics_numeric(text in "[-+]?[0-9.]{0,22}(ns|us|ms|s|m|h|x)?([0-9.]{0,5}(s|m|h))?") {
            let _ = GoDuration::parse(&text);
        }
    }
}
