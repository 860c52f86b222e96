//! What one run did and logged: its actions (whatever became of each) and
//! its log (the plugin's `log` calls, its stdout/stderr and the host's
//! notes), each kept up to a cap so that a plugin flooding them cannot
//! exhaust the host. Shared by every store of one run.

use crate::locks::MutexExt;
use std::sync::{Arc, Mutex};

use crate::record::{ActionRecord, Applied};

/// Most actions one run's record keeps. Live ones are bounded by budgets
/// anyway; this bounds what a plugin calling denied or refused functions in
/// a loop can make the host hold.
pub const MAX_ACTIONS: usize = 256;

/// What one run did and logged; shared by the stores of its calls.
#[derive(Clone)]
pub struct Journal {
    /// The actions kept, and how many more were dropped at the cap.
    actions: Arc<Mutex<(Vec<ActionRecord>, usize)>>,
    pub logs: LogBuffer,
}

impl Journal {
    pub fn new(log_cap: usize) -> Self {
        Self {
            actions: Arc::default(),
            logs: LogBuffer::new(log_cap),
        }
    }

    pub fn actions(&self) -> Vec<ActionRecord> {
        self.actions.locked().0.clone()
    }

    /// Actions dropped at [`MAX_ACTIONS`].
    pub fn dropped_actions(&self) -> usize {
        self.actions.locked().1
    }

    /// `false` when the cap dropped it. An action that ran (or may have)
    /// is always kept: only refusals and simulations can be dropped.
    pub fn push(&self, a: ActionRecord) -> bool {
        let mut g = self.actions.locked();
        let consequential = matches!(
            a.applied,
            Applied::Executed | Applied::Failed | Applied::Unknown | Applied::Interrupted
        );
        if g.0.len() >= MAX_ACTIONS && !consequential {
            g.1 += 1;
            return false;
        }
        g.0.push(a);
        true
    }
}

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

/// Which output of the guest.
#[derive(Clone, Copy)]
pub enum Stream {
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
        let mut g = self.inner.locked();
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

    /// Appends guest output, up to the cap; the rest is counted and dropped.
    pub fn bytes(&self, stream: Stream, data: &[u8]) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_is_shared_and_counted() {
        let log = LogBuffer::new(10);
        log.line("12345".into());
        log.bytes(Stream::Stdout, b"abcdefgh");
        log.line("zz".into());
        assert_eq!(log.dropped(), 3 + 2);
        let lines = log.lines();
        assert_eq!(lines[0], "12345");
        assert_eq!(lines[1], "[stdout] abcde");
        assert!(lines[2].contains("5 bytes of log dropped"));
    }
}
