//! Serde helpers for Nomad's JSON: Go encodes nil maps and slices as `null`, and zero times as
//! `0001-01-01T00:00:00Z`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

/// `null` or absent → `T::default()`.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// RFC 3339 time; `null`, empty, and Go's zero time (year 1) → `None`.
pub(crate) fn go_time<'de, D>(d: D) -> Result<Option<DateTime<Utc>>, D::Error>
where
    D: Deserializer<'de>,
{
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    if s.is_empty() || s.starts_with("0001-01-01") {
        return Ok(None);
    }
    DateTime::parse_from_rfc3339(&s)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(serde::de::Error::custom)
}
