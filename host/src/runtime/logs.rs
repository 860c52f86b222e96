//! A run's log: the plugin's `log` calls and its stdout/stderr, kept up to a
//! byte cap so that a plugin flooding its output cannot exhaust the host.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Default cap of one run's log, shared by `log`, stdout and stderr.
pub const LOG_CAP: usize = 64 * 1024;

#[derive(Default)]
struct Inner {
    lines: Vec<String>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    used: usize,
    dropped: usize,
}

/// Shared by every store of one run.
#[derive(Clone)]
pub struct LogBuffer {
    inner: Arc<Mutex<Inner>>,
    cap: usize,
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

impl LogBuffer {
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Arc::default(),
            cap,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner, usize) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-append;
        // the text is still usable.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g, self.cap)
    }

    /// Appends one line from the `log` interface or the host; `false` when
    /// the cap dropped it.
    pub fn line(&self, line: String) -> bool {
        self.with(|i, cap| {
            let room = cap.saturating_sub(i.used);
            if line.len() <= room {
                i.used += line.len();
                i.lines.push(line);
                true
            } else {
                i.dropped += line.len();
                false
            }
        })
    }

    /// Appends a line of the host's own about the run (what was cut, why it
    /// ran dry): kept even past the cap, since a plugin that filled its log
    /// must not hide them. Only a bounded number of these exist per run.
    pub fn host_line(&self, line: String) {
        self.with(|i, _| i.lines.push(line));
    }

    fn bytes(&self, stream: Stream, data: &[u8]) {
        self.with(|i, cap| {
            let room = cap.saturating_sub(i.used);
            let take = data.len().min(room);
            i.used += take;
            i.dropped += data.len() - take;
            let buf = match stream {
                Stream::Stdout => &mut i.stdout,
                Stream::Stderr => &mut i.stderr,
            };
            buf.extend_from_slice(&data[..take]);
        });
    }

    /// Bytes dropped at the cap so far.
    pub fn dropped(&self) -> usize {
        self.with(|i, _| i.dropped)
    }

    /// The text the guest wrote to stderr (where a Rust panic message goes).
    pub fn stderr_text(&self) -> String {
        self.with(|i, _| String::from_utf8_lossy(&i.stderr).into_owned())
    }

    /// All of it as lines: `log` lines, then stdout, then stderr, then a note
    /// about what the cap dropped.
    pub fn lines(&self) -> Vec<String> {
        self.with(|i, cap| {
            let mut out = i.lines.clone();
            for (name, buf) in [("stdout", &i.stdout), ("stderr", &i.stderr)] {
                out.extend(
                    String::from_utf8_lossy(buf)
                        .lines()
                        .filter(|l| !l.is_empty())
                        .map(|l| format!("[{name}] {l}")),
                );
            }
            if i.dropped > 0 {
                out.push(format!(
                    "[remedy] {} bytes of log dropped at the {cap}-byte cap",
                    i.dropped
                ));
            }
            out
        })
    }

    pub fn stdout(&self) -> GuestOutput {
        GuestOutput {
            log: self.clone(),
            stream: Stream::Stdout,
        }
    }

    pub fn stderr(&self) -> GuestOutput {
        GuestOutput {
            log: self.clone(),
            stream: Stream::Stderr,
        }
    }
}

/// The guest's stdout or stderr. Writes always succeed (a Rust guest panics
/// when a print fails); past the cap they are counted and dropped.
#[derive(Clone)]
pub struct GuestOutput {
    log: LogBuffer,
    stream: Stream,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.log.bytes(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.log.bytes(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_is_shared_and_counted() {
        let log = LogBuffer::new(10);
        log.line("12345".into());
        let mut out = log.stdout();
        out.write(Bytes::from_static(b"abcdefgh")).unwrap();
        log.line("zz".into());
        assert_eq!(log.dropped(), 3 + 2);
        let lines = log.lines();
        assert_eq!(lines[0], "12345");
        assert_eq!(lines[1], "[stdout] abcde");
        assert!(lines[2].contains("5 bytes of log dropped"));
    }
}
