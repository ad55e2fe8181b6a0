//! Parsing of Go duration strings (`time.ParseDuration`), as Consul renders session TTLs
//! (`"15s"`, `"1m30s"`, `"1.5s"`, `"250ms"`).

use std::time::Duration;

/// Parses a Go duration string without a sign: one or more `<number><unit>` groups, the number
/// possibly fractional, units `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`. `"0"` alone is zero.
///
/// Errors: a message naming the offending part of `s`.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".to_string());
    }
    let mut rest = s;
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("expected a number at {rest:?} in {s:?}"));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("bad number {:?} in {s:?}", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit in {s:?}")),
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {s:?} (allowed: ns, us, ms, s, m, h)"
                ));
            }
        };
        total_ns += number * scale;
        rest = &rest[unit_len..];
    }
    if !total_ns.is_finite() || total_ns > u64::MAX as f64 {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_nanos(total_ns.round() as u64))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_shapes_consul_renders() {
        assert_eq!(parse_go_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("1h0m0s"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn rejects_missing_or_unknown_units() {
        assert!(parse_go_duration("15").is_err());
        assert!(parse_go_duration("15d").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("s").is_err());
    }

    proptest! {
        #[test]
        fn round_trips_whole_milliseconds(ms in 0u64..10_000_000_000) {
            let rendered = crate::consul::error::go_duration(Duration::from_millis(ms));
            prop_assert_eq!(parse_go_duration(&rendered), Ok(Duration::from_millis(ms)));
        }

        #[test]
        fn never_panics_on_arbitrary_input(s in ".{0,20}") {
            let _ = parse_go_duration(&s);
        }
    }
}
