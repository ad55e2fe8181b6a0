//! Task logs: the sink a task's stdout/stderr pipe is copied into (`alloc/logs/<task>.<type>.0`)
//! and the `GET /v1/client/fs/logs/:alloc` API (Nomad `client/fs_endpoint.go`): `plain` streams raw
//! bytes, otherwise concatenated JSON frames `{"Offset","Data"(base64),"File"}` of at most 64 KiB,
//! with `{}` heartbeats each second while following. `origin=end` counts `offset` back from the
//! end. Following ends when the task is dead and the file is drained. Readers wake on the sink's
//! progress channel, never by polling the file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;

/// Largest frame payload (64 KiB), as Nomad's `streamFrameSize`.
pub const FRAME_SIZE: usize = 64 * 1024;

/// Progress of a log file: bytes written and whether the writer is done for good.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    /// Bytes in the file.
    pub len: u64,
    /// No more bytes will come (the task is dead).
    pub closed: bool,
}

/// One log file of a task.
#[derive(Debug)]
pub struct LogSink {
    /// Absolute path.
    pub path: PathBuf,
    /// `alloc/logs/<task>.<type>.0`, the `File` of frames.
    pub rel: String,
    progress: watch::Sender<Progress>,
}

impl LogSink {
    /// A sink for `<alloc_dir>/alloc/logs/<task>.<kind>.0`.
    pub fn new(alloc_dir: &std::path::Path, task: &str, kind: &str) -> Arc<LogSink> {
        let rel = format!("alloc/logs/{task}.{kind}.0");
        Arc::new(LogSink {
            path: alloc_dir.join(&rel),
            rel,
            progress: watch::channel(Progress::default()).0,
        })
    }

    /// Copies `pipe` to the file (appending) until EOF, publishing progress.
    pub async fn pump<R: tokio::io::AsyncRead + Unpin>(&self, mut pipe: R) -> std::io::Result<()> {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await?;
        let mut buf = vec![0u8; FRAME_SIZE];
        loop {
            let n = pipe.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            file.write_all(&buf[..n]).await?;
            file.flush().await?;
            self.progress.send_modify(|p| p.len += n as u64);
        }
    }

    /// Marks the log finished: followers end once drained.
    pub fn close(&self) {
        self.progress.send_modify(|p| p.closed = true);
    }

    /// Current progress.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }
}

/// A logs request, parsed from the query string.
#[derive(Debug, Clone)]
pub struct LogsQuery {
    /// Start offset: from the start, or counted back from the end.
    pub offset: u64,
    /// `origin=end`.
    pub from_end: bool,
    /// `follow`.
    pub follow: bool,
    /// `plain`.
    pub plain: bool,
}

/// Encodes one frame.
pub fn frame(offset: u64, data: &[u8], file: &str) -> Bytes {
    let v = serde_json::json!({
        "Offset": offset,
        "Data": base64::engine::general_purpose::STANDARD.encode(data),
        "File": file,
    });
    Bytes::from(v.to_string())
}

struct Reader {
    sink: Arc<LogSink>,
    rx: watch::Receiver<Progress>,
    pos: u64,
    q: LogsQuery,
    file: Option<tokio::fs::File>,
    done: bool,
}

impl Reader {
    async fn read_chunk(&mut self, upto: u64) -> std::io::Result<Vec<u8>> {
        if self.file.is_none() {
            self.file = Some(tokio::fs::File::open(&self.sink.path).await?);
        }
        let want = usize::try_from((upto - self.pos).min(FRAME_SIZE as u64)).unwrap_or(FRAME_SIZE);
        let mut buf = vec![0u8; want];
        let Some(f) = self.file.as_mut() else {
            return Ok(Vec::new());
        };
        f.seek(std::io::SeekFrom::Start(self.pos)).await?;
        let n = f.read(&mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Next chunk of the response body, or `None` at the end.
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if self.done {
                return None;
            }
            let p = *self.rx.borrow_and_update();
            if self.pos < p.len {
                let data = match self.read_chunk(p.len).await {
                    Ok(d) => d,
                    Err(e) => return Some(Err(e)),
                };
                if data.is_empty() {
                    self.done = true;
                    continue;
                }
                self.pos += data.len() as u64;
                return Some(Ok(if self.q.plain {
                    Bytes::from(data)
                } else {
                    // Nomad's `streamFile` sends the offset after the frame's data.
                    frame(self.pos, &data, &self.sink.rel)
                }));
            }
            if !self.q.follow || p.closed {
                self.done = true;
                return None;
            }
            match tokio::time::timeout(Duration::from_secs(1), self.rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    self.done = true;
                }
                Err(_) if !self.q.plain => return Some(Ok(Bytes::from_static(b"{}"))),
                Err(_) => {}
            }
        }
    }
}

/// The response body stream for `sink` and `q`.
pub fn stream(
    sink: Arc<LogSink>,
    q: LogsQuery,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let rx = sink.progress.subscribe();
    let len = rx.borrow().len;
    let pos = if q.from_end {
        len.saturating_sub(q.offset)
    } else {
        q.offset.min(len)
    };
    let reader = Reader {
        sink,
        rx,
        pos,
        q,
        file: None,
        done: false,
    };
    futures::stream::unfold(
        reader,
        |mut r| async move { r.next().await.map(|c| (c, r)) },
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn frames_carry_offsets_and_base64_and_end_when_closed() {
        let dir = std::env::temp_dir().join(format!("logs-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("alloc/logs")).unwrap();
        let sink = LogSink::new(&dir, "t", "stdout");
        sink.pump(&b"hello world"[..]).await.unwrap();
        sink.close();
        let q = LogsQuery {
            offset: 5,
            from_end: true,
            follow: true,
            plain: false,
        };
        let chunks: Vec<Bytes> = stream(sink.clone(), q).map(|c| c.unwrap()).collect().await;
        assert_eq!(chunks.len(), 1);
        let v: serde_json::Value = serde_json::from_slice(&chunks[0]).unwrap();
        assert_eq!(v["File"], "alloc/logs/t.stdout.0");
        assert_eq!(v["Offset"], 11);
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["Data"].as_str().unwrap())
            .unwrap();
        assert_eq!(data, b"world");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
