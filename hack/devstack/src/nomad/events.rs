//! The event stream (`GET /v1/event/stream`, Nomad "Events" API): newline-delimited JSON objects
//! `{"Index":N,"Events":[{Topic,Type,Key,Namespace,FilterKeys,Index,Payload}]}`, `{}` heartbeats
//! every 30 s. `topic=Job:<id>` / `topic=Allocation:*` / `topic=*` select events (a key matches the
//! event's `Key` or one of its `FilterKeys`); `index=N` replays retained events after N. The store
//! retains the last [`RETAINED`] events; readers wake on the store's change channel.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::NomadState;
use super::query::Params;

/// Events kept for replay.
pub const RETAINED: usize = 50_000;

/// One event as it goes on the wire (`Index` included).
#[derive(Debug, Clone)]
pub struct Event {
    /// Index of the change.
    pub index: u64,
    /// `Job`, `Allocation`, `Evaluation`.
    pub topic: &'static str,
    /// Key (job ID, alloc ID, eval ID).
    pub key: String,
    /// Other keys it matches (job ID of an allocation or evaluation).
    pub filter_keys: Vec<String>,
    /// The JSON object.
    pub json: Value,
}

/// Bounded event log.
#[derive(Debug, Default)]
pub struct EventLog {
    events: VecDeque<Arc<Event>>,
}

impl EventLog {
    /// Appends an event.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        index: u64,
        topic: &'static str,
        type_: &str,
        key: &str,
        namespace: &str,
        filter_keys: Vec<String>,
        payload: Value,
    ) {
        let json = json!({
            "Topic": topic, "Type": type_, "Key": key, "Namespace": namespace,
            "FilterKeys": filter_keys, "Index": index, "Payload": payload,
        });
        self.events.push_back(Arc::new(Event {
            index,
            topic,
            key: key.to_string(),
            filter_keys,
            json,
        }));
        while self.events.len() > RETAINED {
            self.events.pop_front();
        }
    }

    /// Events with index > `after`, oldest first.
    pub fn after(&self, after: u64) -> Vec<Arc<Event>> {
        let start = self.events.partition_point(|e| e.index <= after);
        self.events.range(start..).cloned().collect()
    }
}

/// A `topic` filter: `(topic or *, key or *)`.
fn parse_topics(q: &Params) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = q
        .all("topic")
        .map(|v| {
            let (t, key) = v.split_once(':').unwrap_or((v, "*"));
            (t.to_string(), key.to_string())
        })
        .collect();
    if out.is_empty() {
        out.push(("*".into(), "*".into()));
    }
    out
}

fn matches(topics: &[(String, String)], e: &Event) -> bool {
    topics.iter().any(|(t, k)| {
        (t == "*" || t == e.topic)
            && (k == "*" || *k == e.key || e.filter_keys.iter().any(|f| f == k))
    })
}

/// `GET /v1/event/stream`.
pub(super) async fn stream(State(st): State<Arc<NomadState>>, q: Params) -> Response {
    let topics = parse_topics(&q);
    let cursor = q.get("index").and_then(|v| v.parse().ok()).unwrap_or(0);
    let rx = st.subscribe();
    let init = (st, rx, cursor, topics);
    let s = futures::stream::unfold(init, |(st, mut rx, mut cursor, topics)| async move {
        loop {
            rx.borrow_and_update();
            let batch: Vec<Arc<Event>> = st.store().events.after(cursor);
            if let Some(last) = batch.last() {
                cursor = last.index;
                let mut lines = String::new();
                let mut i = 0;
                while i < batch.len() {
                    let idx = batch[i].index;
                    let group: Vec<&Value> = batch[i..]
                        .iter()
                        .take_while(|e| e.index == idx)
                        .filter(|e| matches(&topics, e))
                        .map(|e| &e.json)
                        .collect();
                    i += batch[i..].iter().take_while(|e| e.index == idx).count();
                    if !group.is_empty() {
                        lines.push_str(&json!({"Index": idx, "Events": group}).to_string());
                        lines.push('\n');
                    }
                }
                if !lines.is_empty() {
                    return Some((
                        Ok::<_, std::io::Error>(Bytes::from(lines)),
                        (st, rx, cursor, topics),
                    ));
                }
                continue;
            }
            let waited = tokio::select! {
                r = tokio::time::timeout(Duration::from_secs(30), rx.changed()) => r,
                () = st.closing().cancelled() => return None,
            };
            match waited {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return None,
                Err(_) => {
                    return Some((Ok(Bytes::from_static(b"{}\n")), (st, rx, cursor, topics)));
                }
            }
        }
    });
    let mut r = Response::new(Body::from_stream(s));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn topics_match_key_or_filter_keys() {
        let mut log = EventLog::default();
        log.push(
            5,
            "Allocation",
            "AllocationUpdated",
            "a1",
            "default",
            vec!["job1".into()],
            json!({}),
        );
        let e = &log.after(0)[0];
        assert!(matches(
            &parse_topics(&Params::parse("topic=Allocation:job1")),
            e
        ));
        assert!(matches(
            &parse_topics(&Params::parse("topic=Allocation:*")),
            e
        ));
        assert!(matches(&parse_topics(&Params::default()), e));
        assert!(!matches(&parse_topics(&Params::parse("topic=Job:job1")), e));
        assert!(log.after(5).is_empty());
    }
}
