//! The event stream: `GET /v1/event/stream?topic=<Topic>:<key>&index=` (Nomad API docs,
//! "Events"). The body is newline-delimited JSON: one `{"Index":N,"Events":[...]}` batch per
//! line, and `{}` heartbeats (about every 30 s). [`LineDecoder`] turns HTTP chunks into batches.

use serde::Deserialize;

use super::Error;
use super::wire::null_default;

/// One line of the event stream.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventBatch {
    /// Raft index of the batch; resume with `index = this` after a disconnect.
    #[serde(default)]
    pub index: u64,
    /// The events.
    #[serde(default, deserialize_with = "null_default")]
    pub events: Vec<Event>,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Event {
    /// `Job`, `Allocation`, `Evaluation`, `Deployment`, `Node`, ...
    #[serde(default)]
    pub topic: String,
    /// `JobRegistered`, `JobDeregistered`, `AllocationCreated`, `AllocationUpdated`,
    /// `EvaluationUpdated`, ...
    #[serde(rename = "Type", default)]
    pub type_: String,
    /// The object's ID (job ID, allocation ID, ...).
    #[serde(default)]
    pub key: String,
    /// Namespace.
    #[serde(default, deserialize_with = "null_default")]
    pub namespace: String,
    /// Extra keys the event matches topic filters on (an allocation's job ID, ...).
    #[serde(default, deserialize_with = "null_default")]
    pub filter_keys: Vec<String>,
    /// Raft index.
    #[serde(default)]
    pub index: u64,
    /// The object (`{"Job": {...}}`, `{"Allocation": {...}}`), kept as JSON.
    #[serde(default)]
    pub payload: serde_json::Value,
}

/// Incremental ndjson decoder: complete lines come out as batches, heartbeats (`{}`, or a batch
/// without events) are dropped, a partial line waits for the next chunk.
#[derive(Debug, Default)]
pub struct LineDecoder {
    buf: Vec<u8>,
}

impl LineDecoder {
    /// A decoder with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `chunk`; returns the batches of every line it completes.
    ///
    /// Errors: [`Error::Decode`] (endpoint `event_stream`) for a line that is not a batch.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<EventBatch>, Error> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            if let Some(b) = parse_line(&line)? {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// Ends the stream: a last line without `\n` is decoded too.
    pub fn finish(&mut self) -> Result<Option<EventBatch>, Error> {
        let rest = std::mem::take(&mut self.buf);
        parse_line(&rest)
    }
}

fn parse_line(line: &[u8]) -> Result<Option<EventBatch>, Error> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let b: EventBatch = serde_json::from_slice(line).map_err(|source| Error::Decode {
        endpoint: "event_stream",
        source,
    })?;
    Ok((!b.events.is_empty()).then_some(b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(index: u64, key: &str) -> String {
        format!(
            "{}\n",
            serde_json::json!({"Index": index, "Events": [{"Topic": "Allocation",
                "Type": "AllocationUpdated", "Key": key, "Index": index, "FilterKeys": ["job-1"],
                "Payload": {"Allocation": {"ID": key}}}]})
        )
    }

    #[test]
    fn heartbeats_are_dropped_and_events_decoded() {
        let mut d = LineDecoder::new();
        let text = format!("{{}}\n{}{{}}\n", line(7, "a1"));
        let got = d.push(text.as_bytes()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].index, 7);
        assert_eq!(got[0].events[0].key, "a1");
        assert_eq!(got[0].events[0].filter_keys, ["job-1"]);
        assert_eq!(d.finish().unwrap(), None);
    }

    #[test]
    fn a_line_that_is_not_json_is_an_error() {
        assert!(LineDecoder::new().push(b"nope\n").is_err());
    }

    proptest! {
        #[test]
        fn batches_decode_identically_for_any_chunking(
            n in 0usize..8,
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let text: String = (0..n).map(|i| line(i as u64 + 1, &format!("a{i}")) + "{}\n").collect();
            let bytes = text.as_bytes();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.extend([0, bytes.len()]);
            points.sort_unstable();
            let mut d = LineDecoder::new();
            let mut got = Vec::new();
            for w in points.windows(2) {
                got.extend(d.push(&bytes[w[0]..w[1]]).unwrap());
            }
            prop_assert_eq!(d.finish().unwrap(), None);
            let idx: Vec<u64> = got.iter().map(|b| b.index).collect();
            prop_assert_eq!(idx, (1..=n as u64).collect::<Vec<_>>());
        }
    }
}
