//! KV types: entries, read options, write options (Consul `api-docs/kv`).

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use super::error::{ConsulError, Result};

/// One KV entry as Consul returns it, with the value base64-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPair {
    /// Full key, without a leading slash.
    pub key: String,
    /// Raw value bytes (empty when Consul returned `null`).
    pub value: Vec<u8>,
    /// Opaque client flags (uint64).
    pub flags: u64,
    /// Raft index that created the key.
    pub create_index: u64,
    /// Raft index of the last change of the key (value, flags or lock holder).
    pub modify_index: u64,
    /// Number of times the key's lock was acquired.
    pub lock_index: u64,
    /// Session holding the key's lock, if any.
    pub session: Option<String>,
}

/// The wire shape of a KV entry (`[{LockIndex,Key,Flags,Value,Session?,CreateIndex,ModifyIndex}]`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireKvPair {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    flags: u64,
    #[serde(default)]
    create_index: u64,
    #[serde(default)]
    modify_index: u64,
    #[serde(default)]
    lock_index: u64,
    #[serde(default)]
    session: Option<String>,
}

impl WireKvPair {
    pub(crate) fn decode(self, endpoint: &'static str) -> Result<KvPair> {
        let value = match self.value {
            None => Vec::new(),
            Some(v) => base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .map_err(|e| ConsulError::Decode {
                    endpoint,
                    message: format!("Value of key {:?} is not base64: {e}", self.key),
                })?,
        };
        Ok(KvPair {
            key: self.key,
            value,
            flags: self.flags,
            create_index: self.create_index,
            modify_index: self.modify_index,
            lock_index: self.lock_index,
            session: self.session.filter(|s| !s.is_empty()),
        })
    }
}

/// Options of a read (Consul "blocking queries" and "consistency modes").
///
/// `index` 0 means a non-blocking read; with `index > 0` the read blocks until the result's index
/// passes `index` or `wait` (server default 5 min, capped at 10 min) elapses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryOptions {
    /// Block until the index passes this value (0 = do not block).
    pub index: u64,
    /// Maximum blocking time (sent in milliseconds); `None` = the server default (5 min).
    pub wait: Option<Duration>,
    /// `consistent` mode: linearizable read through the leader.
    pub consistent: bool,
    /// `stale` mode: any server may answer. Mutually exclusive with `consistent`.
    pub stale: bool,
}

/// Server default `wait` of a blocking query (Consul `features/blocking`).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Server cap of `wait`.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

impl QueryOptions {
    /// A blocking read from `index` for at most `wait`.
    pub fn blocking(index: u64, wait: Duration) -> QueryOptions {
        QueryOptions {
            index,
            wait: Some(wait),
            ..QueryOptions::default()
        }
    }

    /// The same options in `consistent` mode.
    pub fn consistent(mut self) -> QueryOptions {
        self.consistent = true;
        self
    }

    /// The longest the server may hold this request: 0 when not blocking, else
    /// `wait + wait/16` (Consul adds up to wait/16 jitter).
    pub fn max_server_hold(&self) -> Duration {
        if self.index == 0 {
            return Duration::ZERO;
        }
        let wait = self.wait.unwrap_or(DEFAULT_WAIT).min(MAX_WAIT);
        wait + wait / 16
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.consistent && self.stale {
            return Err(ConsulError::InvalidArgument {
                field: "QueryOptions",
                message: "consistent and stale are mutually exclusive".to_string(),
            });
        }
        Ok(())
    }

    pub(crate) fn append(&self, q: &mut url::form_urlencoded::Serializer<'_, url::UrlQuery<'_>>) {
        if self.index > 0 {
            q.append_pair("index", &self.index.to_string());
            if let Some(w) = self.wait {
                q.append_pair("wait", &format!("{}ms", w.as_millis()));
            }
        }
        if self.consistent {
            q.append_pair("consistent", "");
        }
        if self.stale {
            q.append_pair("stale", "");
        }
    }
}

/// Options of a KV PUT. `cas`, `acquire` and `release` are mutually exclusive (Consul answers
/// 400 "Conflicting flags"; we refuse before sending).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Check-and-set: 0 = create only if missing; N = only if the ModifyIndex is N.
    pub cas: Option<u64>,
    /// Acquire the key's lock for this session.
    pub acquire: Option<String>,
    /// Release the key's lock held by this session.
    pub release: Option<String>,
    /// Opaque uint64 flags stored with the key.
    pub flags: Option<u64>,
}

impl PutOptions {
    /// Create-only or compare-and-swap on `modify_index` (0 = create only).
    pub fn cas(modify_index: u64) -> PutOptions {
        PutOptions {
            cas: Some(modify_index),
            ..PutOptions::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let n = [
            self.cas.is_some(),
            self.acquire.is_some(),
            self.release.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n > 1 {
            return Err(ConsulError::InvalidArgument {
                field: "PutOptions",
                message: "cas, acquire and release are mutually exclusive".to_string(),
            });
        }
        for (field, s) in [("acquire", &self.acquire), ("release", &self.release)] {
            if s.as_ref().is_some_and(String::is_empty) {
                return Err(ConsulError::InvalidArgument {
                    field,
                    message: "the session ID must not be empty".to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Options of a KV DELETE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Delete only if the ModifyIndex equals this value (Consul never deletes with `cas=0`).
    pub cas: Option<u64>,
    /// Delete every key under the prefix. Not combinable with `cas`.
    pub recurse: bool,
}

/// Validates a single-key argument and strips one leading `/` (as the Go client does).
pub(crate) fn key_arg<'a>(field: &'static str, key: &'a str) -> Result<&'a str> {
    let k = key.strip_prefix('/').unwrap_or(key);
    if k.is_empty() {
        return Err(ConsulError::InvalidArgument {
            field,
            message: "the key must not be empty".to_string(),
        });
    }
    Ok(k)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn null_value_decodes_as_empty_and_empty_session_as_none() {
        let w: Vec<WireKvPair> = serde_json::from_str(
            r#"[{"LockIndex":1,"Key":"a/b","Flags":7,"Value":null,"Session":"","CreateIndex":3,"ModifyIndex":4}]"#,
        )
        .unwrap();
        let p = w.into_iter().next().unwrap().decode("kv_get").unwrap();
        assert_eq!(p.value, Vec::<u8>::new());
        assert_eq!(p.session, None);
        assert_eq!(
            (p.flags, p.create_index, p.modify_index, p.lock_index),
            (7, 3, 4, 1)
        );
    }

    #[test]
    fn bad_base64_is_a_decode_error_naming_the_key() {
        let w: WireKvPair = serde_json::from_str(r#"{"Key":"k","Value":"!!"}"#).unwrap();
        let e = w.decode("kv_get").unwrap_err();
        assert!(e.to_string().contains("\"k\""), "{e}");
    }

    #[test]
    fn conflicting_put_flags_are_refused() {
        let o = PutOptions {
            cas: Some(0),
            acquire: Some("s".into()),
            ..Default::default()
        };
        assert!(o.validate().is_err());
        assert!(PutOptions::cas(3).validate().is_ok());
    }

    #[test]
    fn server_hold_is_wait_plus_a_sixteenth_capped_at_ten_minutes() {
        assert_eq!(QueryOptions::default().max_server_hold(), Duration::ZERO);
        assert_eq!(
            QueryOptions::blocking(5, Duration::from_secs(16)).max_server_hold(),
            Duration::from_secs(17)
        );
        let q = QueryOptions {
            index: 1,
            ..Default::default()
        };
        assert_eq!(q.max_server_hold(), DEFAULT_WAIT + DEFAULT_WAIT / 16);
        assert_eq!(
            QueryOptions::blocking(1, Duration::from_secs(3600)).max_server_hold(),
            MAX_WAIT + MAX_WAIT / 16
        );
    }
}
