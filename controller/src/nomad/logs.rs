//! Allocation logs: `GET /v1/client/fs/logs/:alloc` (Nomad API docs, "Client FS: Stream logs").
//!
//! Without `plain=true` Nomad sends a stream of *concatenated* JSON objects — not newline
//! delimited — `{"Offset":N,"Data":"<base64>","File":"alloc/logs/t.stdout.0","FileEvent":""}`,
//! with `{}` heartbeats about once a second while following. An object may be split across any
//! number of HTTP chunks. [`FrameDecoder`] turns such chunks into frames.

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;

use super::Error;

/// Which log stream of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// The task's stdout.
    Stdout,
    /// The task's stderr.
    Stderr,
}

impl LogStream {
    /// The `type` query value.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// Where `offset` counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogOrigin {
    /// From the first byte.
    #[default]
    Start,
    /// Backwards from the last byte (a tail).
    End,
}

impl LogOrigin {
    /// The `origin` query value.
    pub fn as_str(self) -> &'static str {
        match self {
            LogOrigin::Start => "start",
            LogOrigin::End => "end",
        }
    }
}

/// Options of a log request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogOptions {
    /// Where `offset` counts from.
    pub origin: LogOrigin,
    /// Byte offset from `origin` (bytes).
    pub offset: u64,
    /// Keep the stream open and send new output as it is written.
    pub follow: bool,
    /// Raw bytes instead of JSON frames.
    pub plain: bool,
}

/// One decoded log frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogFrame {
    /// Offset of the end of `data` in `file` (bytes).
    pub offset: i64,
    /// Decoded bytes (empty for heartbeats and file events).
    pub data: Bytes,
    /// File the data came from (`alloc/logs/<task>.stdout.0`).
    pub file: String,
    /// `file deleted`, `file truncated`, or empty.
    pub file_event: String,
}

impl LogFrame {
    /// A `{}` heartbeat: no data, no file event.
    pub fn is_heartbeat(&self) -> bool {
        self.data.is_empty() && self.file_event.is_empty() && self.file.is_empty()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireFrame {
    #[serde(default)]
    offset: i64,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    file_event: Option<String>,
}

/// Incremental decoder of Nomad's concatenated-JSON log frames. Feed chunks with
/// [`FrameDecoder::push`]; complete frames come out, an incomplete tail is kept for the next
/// chunk. Whitespace between objects is allowed.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `chunk` and returns every frame completed by it, in order.
    ///
    /// Errors: [`Error::LogFrame`] when the bytes are not a JSON object stream or `Data` is not
    /// base64. The decoder should not be used after an error.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<LogFrame>, Error> {
        self.buf.extend_from_slice(chunk);
        let mut frames = Vec::new();
        let mut consumed = 0;
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<WireFrame>();
        loop {
            match it.next() {
                None => {
                    consumed = self.buf.len();
                    break;
                }
                Some(Ok(w)) => {
                    consumed = it.byte_offset();
                    frames.push(decode_frame(w)?);
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    return Err(Error::LogFrame {
                        reason: e.to_string(),
                    });
                }
            }
        }
        self.buf.drain(..consumed);
        Ok(frames)
    }

    /// Ends the stream. Errors: [`Error::LogFrame`] if a partial frame is left over.
    pub fn finish(&self) -> Result<(), Error> {
        if self.buf.iter().all(u8::is_ascii_whitespace) {
            Ok(())
        } else {
            Err(Error::LogFrame {
                reason: format!(
                    "stream ended inside a frame ({} bytes left)",
                    self.buf.len()
                ),
            })
        }
    }
}

fn decode_frame(w: WireFrame) -> Result<LogFrame, Error> {
    let data = match w.data.as_deref() {
        None | Some("") => Bytes::new(),
        Some(d) => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(d)
                .map_err(|e| Error::LogFrame {
                    reason: format!("Data is not base64: {e}"),
                })?,
        ),
    };
    Ok(LogFrame {
        offset: w.offset,
        data,
        file: w.file.unwrap_or_default(),
        file_event: w.file_event.unwrap_or_default(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(frames: &[(i64, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (off, data) in frames {
            if data.is_empty() {
                out.extend_from_slice(b"{}");
            } else {
                let v = serde_json::json!({
                    "Offset": off,
                    "Data": base64::engine::general_purpose::STANDARD.encode(data),
                    "File": "alloc/logs/main.stdout.0",
                    "FileEvent": ""
                });
                out.extend_from_slice(v.to_string().as_bytes());
            }
        }
        out
    }

    #[test]
    fn heartbeats_carry_no_data() {
        let mut d = FrameDecoder::new();
        let f = d.push(b"{}{}").unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(LogFrame::is_heartbeat));
        d.finish().unwrap();
    }

    #[test]
    fn frame_split_inside_base64_is_completed_by_the_next_chunk() {
        let bytes = encode(&[(5, b"hello".to_vec())]);
        let (a, b) = bytes.split_at(bytes.len() / 2);
        let mut d = FrameDecoder::new();
        assert!(d.push(a).unwrap().is_empty());
        assert!(d.finish().is_err(), "a half frame is not a complete stream");
        let f = d.push(b).unwrap();
        assert_eq!(f[0].data.as_ref(), b"hello");
        assert_eq!(f[0].offset, 5);
        d.finish().unwrap();
    }

    #[test]
    fn bad_base64_and_bad_json_are_errors() {
        assert!(FrameDecoder::new().push(br#"{"Data":"!!!"}"#).is_err());
        assert!(FrameDecoder::new().push(b"]").is_err());
    }

    proptest! {
        #[test]
        fn frames_decode_identically_for_any_chunking(
            frames in prop::collection::vec((0i64..1_000_000, prop::collection::vec(any::<u8>(), 0..200)), 0..12),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let bytes = encode(&frames);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.push(0);
            points.push(bytes.len());
            points.sort_unstable();
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for w in points.windows(2) {
                got.extend(d.push(&bytes[w[0]..w[1]]).unwrap());
            }
            d.finish().unwrap();
            prop_assert_eq!(got.len(), frames.len());
            let data: Vec<u8> = got.iter().flat_map(|f| f.data.to_vec()).collect();
            let want: Vec<u8> = frames.iter().flat_map(|(_, d)| d.clone()).collect();
            prop_assert_eq!(data, want);
        }
    }
}
