//! One guest call in a fresh `Store`: instantiate from the cached
//! `InstancePre`, set the deadline and memory limit, call, and turn a trap
//! into a precise reason (timed out, out of memory, panic message).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};

use super::engine::Runtime;
use super::plugin::{LoadError, Plugin, PluginInfo, PluginSettings};
use super::state::RunState;
use crate::bindings::types as wit;
use crate::bindings::{Runbook, RunbookPre};
use crate::capabilities::Backends;
use crate::capabilities::HostCtx;
use crate::escalation::Policy;
use crate::gate::{Phase, RunGate};
use crate::journal::Journal;

/// Why a guest call did not return.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("deadline of {0} ms exceeded")]
    TimedOut(u64),
    #[error("{0}")]
    OutOfMemory(String),
    #[error("{0}")]
    Trapped(String),
}

type CallFuture<'a, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>>;

/// Time given to host calls in flight past the guest's deadline before the
/// whole call is abandoned.
const DEADLINE_GRACE: Duration = Duration::from_millis(100);

/// Describe must be cheap: it runs at every load.
const DESCRIBE_TIMEOUT: Duration = Duration::from_millis(1_000);

/// What a call needs besides its arguments.
pub struct CallSetup<'a> {
    /// The run as the gate knows it.
    pub run: &'a Arc<RunGate>,
    pub settings: &'a PluginSettings,
    pub backends: &'a Arc<Backends>,
    pub escalation: &'a Arc<Policy>,
}

/// What the guest said about its own failure, from its stderr: a Rust
/// panic's `panicked at …`, a Python traceback's last frame and exception,
/// else (JavaScript and the rest) the last lines it wrote. The run's error
/// carries it, so an author need not dig in the logs.
fn guest_error(stderr: &str) -> Option<String> {
    // First: componentize-py's runtime panics *after* the traceback.
    if let Some(tb) = stderr.rfind("Traceback (most recent call last):") {
        let rest: Vec<&str> = stderr[tb..].lines().skip(1).collect();
        let frame = rest
            .iter()
            .rfind(|l| l.trim_start().starts_with("File "))
            .map(|l| l.trim());
        // Frames and source lines are indented; the exception is not.
        let exception = rest
            .iter()
            .find(|l| !l.trim().is_empty() && !l.starts_with(' '))?;
        return Some(match frame {
            Some(f) => format!("raised {} ({f})", exception.trim()),
            None => format!("raised {}", exception.trim()),
        });
    }
    if let Some(start) = stderr.find("panicked at") {
        let text: Vec<&str> = stderr[start..]
            .lines()
            .take_while(|l| !l.starts_with("note:"))
            .collect();
        return Some(text.join(" ").trim().to_string());
    }
    // componentize-js, when a thrown value is not an `error` variant.
    if let Some(i) = stderr.find("(received `") {
        let rest = &stderr[i + "(received `".len()..];
        if let Some(end) = rest.find("`)") {
            return Some(format!(
                "threw {} (throw {{ tag: 'failed', val: '…' }} to return an error)",
                &rest[..end]
            ));
        }
    }
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let last = &lines[lines.len().saturating_sub(3)..];
    (!last.is_empty()).then(|| crate::record::cut(&last.join(" | "), 1000))
}

impl Runtime {
    async fn call<R: Send>(
        &self,
        pre: &RunbookPre<RunState>,
        host: HostCtx,
        memory_bytes: usize,
        timeout: Duration,
        f: impl for<'a> FnOnce(&'a Runbook, &'a mut Store<RunState>) -> CallFuture<'a, R> + Send,
    ) -> Result<R, CallError> {
        let logs = host.gate.journal.logs.clone();
        // The code's own engine: the quick tier's or the optimised one's.
        let mut store = Store::new(pre.engine(), RunState::new(host, memory_bytes));
        store.limiter(|s| &mut s.limiter);
        let deadline = Instant::now() + timeout;
        store.set_epoch_deadline(1);
        // Every tick the guest yields to tokio, so a tight loop starves no
        // other run; past the deadline it is interrupted.
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let run = async {
            let instance = pre.instantiate_checked(&mut store).await?;
            f(&instance, &mut store).await
        };
        let result = tokio::time::timeout(timeout + DEADLINE_GRACE, run).await;
        let timeout_ms = timeout.as_millis() as u64;
        let err = match result {
            Err(_) => return Err(CallError::TimedOut(timeout_ms)),
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => e,
        };
        if let Some(total) = store.data().limiter.refused {
            return Err(CallError::OutOfMemory(format!(
                "memory limit of {} MiB reached (the guest asked for {} bytes in all)",
                store.data().limiter.limit() >> 20,
                total
            )));
        }
        if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return Err(CallError::TimedOut(timeout_ms));
        }
        // `{:#}`: the trap and the guest backtrace, without the host's own.
        let mut msg = format!("{err:#}");
        if let Some(said) = guest_error(&logs.stderr_text()) {
            msg = format!("guest {said}\n{msg}");
        }
        Err(CallError::Trapped(msg))
    }

    fn host(&self, setup: &CallSetup<'_>, phase: Phase, timeout: Duration) -> HostCtx {
        HostCtx {
            backends: setup.backends.clone(),
            escalation: setup.escalation.clone(),
            gate: setup
                .run
                .call(phase, Some(tokio::time::Instant::now() + timeout)),
            files: setup.settings.files.clone(),
        }
    }

    /// `describe()` with no grants, a short deadline and the default memory.
    /// `describe()`, and the memory the instance held after it: about its
    /// memory image, which every run needs before doing anything. It runs
    /// under the largest memory an instance may have, because the plugin's
    /// own setting is not known until describe has said its name.
    pub(crate) async fn describe(
        &self,
        pre: &RunbookPre<RunState>,
    ) -> Result<(PluginInfo, usize), LoadError> {
        let settings = PluginSettings::default();
        let run = Arc::new(RunGate {
            journal: Journal::new(4096),
            ..RunGate::new("(loading)", "(describe)", settings.grants.clone(), true)
        });
        let setup = CallSetup {
            run: &run,
            settings: &settings,
            backends: &Arc::new(Backends::none()),
            escalation: &Arc::default(),
        };
        let host = self.host(&setup, Phase::Describe, DESCRIBE_TIMEOUT);
        let (info, memory) = self
            .call(
                pre,
                host,
                super::engine::MAX_MEMORY_BYTES,
                DESCRIBE_TIMEOUT,
                |rb, store| {
                    Box::pin(async move {
                        let info = rb.call_describe(&mut *store).await?;
                        Ok((info, store.data().limiter.used()))
                    })
                },
            )
            .await
            .map_err(|e| LoadError::Describe(e.to_string()))?;
        if info.name.is_empty()
            || !info
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(LoadError::Describe(format!(
                "plugin name `{}` must be non-empty lowercase letters, digits and dashes",
                info.name
            )));
        }
        let info = PluginInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            alerts: info.alerts,
        };
        Ok((info, memory))
    }

    pub async fn detect(
        &self,
        plugin: &Plugin,
        setup: CallSetup<'_>,
        ctx: wit::Context,
    ) -> Result<Result<wit::Detection, wit::Error>, CallError> {
        let host = self.host(&setup, Phase::Detect, setup.settings.detect_timeout);
        self.call(
            &plugin.code.current().pre,
            host,
            setup.settings.memory_bytes,
            setup.settings.detect_timeout,
            move |rb, store| Box::pin(async move { rb.call_detect(store, &ctx).await }),
        )
        .await
    }

    pub async fn mitigate(
        &self,
        plugin: &Plugin,
        setup: CallSetup<'_>,
        ctx: wit::Context,
        detection: wit::Detection,
    ) -> Result<Result<wit::Outcome, wit::Error>, CallError> {
        let host = self.host(&setup, Phase::Mitigate, setup.settings.mitigate_timeout);
        self.call(
            &plugin.code.current().pre,
            host,
            setup.settings.memory_bytes,
            setup.settings.mitigate_timeout,
            move |rb, store| {
                Box::pin(async move { rb.call_mitigate(store, &ctx, &detection).await })
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::guest_error;

    #[test]
    fn what_the_guest_said() {
        let rust = "thread '<unnamed>' panicked at src/lib.rs:9:5:\nboom: disk on fire\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            guest_error(rust).unwrap(),
            "panicked at src/lib.rs:9:5: boom: disk on fire"
        );
        // As componentize-py 0.25 writes it: the traceback, then its
        // runtime's own panic.
        let python = "Traceback (most recent call last):\n  File \"/0/app.py\", line 3, in detect\n    check(cfg)\n  File \"/0/app.py\", line 12, in check\nValueError: max_usage_ratio must be a number\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:\nPython function threw an unexpected exception\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            guest_error(python).unwrap(),
            "raised ValueError: max_usage_ratio must be a number (File \"/0/app.py\", line 12, in check)"
        );
        let js = "invalid variant tag value `undefined` (received `Error: threshold missing`) specified for `Error`\nStack:\n  export_mitigate@initializer.js:1229:17\nRedirecting call to abort() to mozalloc_abort\n";
        assert_eq!(
            guest_error(js).unwrap(),
            "threw Error: threshold missing (throw { tag: 'failed', val: '…' } to return an error)"
        );
        let other = "starting\nout of cheese\n    at detect (x.js:4:11)\n";
        assert_eq!(
            guest_error(other).unwrap(),
            "starting | out of cheese | at detect (x.js:4:11)"
        );
        assert_eq!(guest_error(""), None);
        assert_eq!(guest_error("\n  \n"), None);
    }
}
