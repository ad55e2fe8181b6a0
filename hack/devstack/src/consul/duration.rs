//! Go `time.ParseDuration` syntax, which Consul uses for `?wait=`, session `TTL` and `LockDelay`.
//!
//! Accepted: an optional sign, then one or more `<decimal><unit>` terms (`15s`, `1m30s`, `1.5h`,
//! `250ms`), units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`; the bare string `0`. Negative durations
//! are rejected (nothing in the Consul API accepts them).

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text is not Go duration syntax.
    #[error(
        "invalid duration {0:?}: expected terms like 15s, 1m30s, 250ms (units ns, us, ms, s, m, h)"
    )]
    Syntax(String),
    /// The duration is negative.
    #[error("invalid duration {0:?}: must not be negative")]
    Negative(String),
    /// The duration overflows 64-bit nanoseconds.
    #[error("invalid duration {0:?}: too large")]
    Overflow(String),
}

/// Parses a Go duration string (see the module docs).
///
/// Errors: [`DurationError`] naming the offending text.
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(text.to_string());
    let mut s = text;
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    } else if s.starts_with('-') {
        return Err(DurationError::Negative(text.to_string()));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(syntax());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let num_len = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(syntax)?;
        let (num, rest) = s.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(syntax());
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            _ => return Err(syntax()),
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part
                .parse()
                .map_err(|_| DurationError::Overflow(text.to_string()))?
        };
        let mut nanos = int
            .checked_mul(scale)
            .ok_or_else(|| DurationError::Overflow(text.to_string()))?;
        // Fractional digits beyond nanosecond precision are dropped, as Go does.
        let mut frac_scale = scale;
        for d in frac_part.bytes().take(30) {
            frac_scale /= 10;
            nanos += u128::from(d - b'0') * frac_scale;
        }
        total = total
            .checked_add(nanos)
            .ok_or_else(|| DurationError::Overflow(text.to_string()))?;
        s = rest;
    }
    let nanos = u64::try_from(total).map_err(|_| DurationError::Overflow(text.to_string()))?;
    if nanos > i64::MAX as u64 {
        return Err(DurationError::Overflow(text.to_string()));
    }
    Ok(Duration::from_nanos(nanos))
}

/// Formats a duration as Go's `Duration.String()` does for whole seconds and larger
/// (`15s`, `1m0s`, `1h0m0s`); sub-second durations as `250ms`. Used for session `TTL`.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        if nanos.is_multiple_of(1_000_000) {
            return format!("{}ms", nanos / 1_000_000);
        }
        return format!("{nanos}ns");
    }
    let secs = d.as_secs();
    let sub = d.subsec_nanos();
    let sec_str = if sub == 0 {
        format!("{}s", secs % 60)
    } else {
        let frac = format!("{sub:09}");
        format!("{}.{}s", secs % 60, frac.trim_end_matches('0'))
    };
    let (h, m) = (secs / 3600, (secs / 60) % 60);
    if h > 0 {
        format!("{h}h{m}m{sec_str}")
    } else if m > 0 {
        format!("{m}m{sec_str}")
    } else {
        sec_str
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_go_examples() {
        assert_eq!(parse_go_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("10us"), Ok(Duration::from_micros(10)));
    }

    #[test]
    fn rejects_missing_unit_and_garbage() {
        for bad in ["", "10", "s", "1x", "-1s", "1..2s", "."] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(Duration::from_secs(15)), "15s");
        assert_eq!(format_go_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(format_go_duration(Duration::from_secs(86400)), "24h0m0s");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in 0u64..400_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d));
        }

        #[test]
        fn parser_never_panics(s in "\\PC{0,12}") {
            let _ = parse_go_duration(&s);
        }
    }
}
