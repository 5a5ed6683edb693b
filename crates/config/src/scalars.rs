//! Flag scalars parsed the way Go's `strconv` (and so pflag) parses them:
//! `--cleanup=T`, `--oom-score-adj=-0x3e7` and `--v=04` all work upstream.

/// `strconv.ParseBool`: 1, t, T, TRUE, true, True and their false twins.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("must be a boolean (true or false)".to_owned()),
    }
}

/// `strconv.ParseInt(s, 0, 64)`: optional sign, then decimal, `0x` hex, `0o`
/// or leading-`0` octal, or `0b` binary, with `_` separators allowed.
pub fn parse_go_int(s: &str) -> Result<i64, String> {
    let bad = || "must be an integer".to_owned();
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) =
        if let Some(rest) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
            (16, rest)
        } else if let Some(rest) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
            (8, rest)
        } else if let Some(rest) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
            (2, rest)
        } else if body.len() > 1 && body.starts_with('0') {
            (8, &body[1..])
        } else {
            (10, body)
        };
    let digits: String = digits.chars().filter(|c| *c != '_').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(bad());
    }
    let magnitude =
        u64::from_str_radix(&digits, radix).map_err(|_| "value out of range".to_owned())?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
            .ok_or_else(|| "value out of range".to_owned())
    } else {
        i64::try_from(magnitude).map_err(|_| "value out of range".to_owned())
    }
}

/// An `int32` flag.
pub fn parse_go_i32(s: &str) -> Result<i32, String> {
    i32::try_from(parse_go_int(s)?).map_err(|_| "value out of range for int32".to_owned())
}

/// A `uint32` flag (e.g. `-v`).
pub fn parse_go_u32(s: &str) -> Result<u32, String> {
    if s.starts_with('-') {
        return Err("must be a non-negative integer".to_owned());
    }
    u32::try_from(parse_go_int(s)?).map_err(|_| "value out of range for uint32".to_owned())
}

/// A `float32` flag; non-finite values are refused.
pub fn parse_go_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| "must be a number".to_owned())?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err("must be a finite number".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go integer literal forms, as pflag accepts them.
    #[test]
    fn go_ints() {
        assert_eq!(parse_go_int("42"), Ok(42));
        assert_eq!(parse_go_int("-999"), Ok(-999));
        assert_eq!(parse_go_int("0x1F"), Ok(31));
        assert_eq!(parse_go_int("017"), Ok(15));
        assert_eq!(parse_go_int("0o17"), Ok(15));
        assert_eq!(parse_go_int("0b101"), Ok(5));
        assert_eq!(parse_go_int("1_000"), Ok(1000));
        assert_eq!(parse_go_int("0"), Ok(0));
        assert!(parse_go_int("").is_err());
        assert!(parse_go_int("09").is_err());
        assert!(parse_go_int("1.5").is_err());
        assert!(parse_go_i32("4294967296").is_err());
        assert!(parse_go_u32("-1").is_err());
        assert_eq!(parse_go_int("-9223372036854775808"), Ok(i64::MIN));
    }

    /// strconv.ParseBool spellings only.
    #[test]
    fn go_bools() {
        assert_eq!(parse_go_bool("T"), Ok(true));
        assert_eq!(parse_go_bool("False"), Ok(false));
        assert!(parse_go_bool("yes").is_err());
    }
}
