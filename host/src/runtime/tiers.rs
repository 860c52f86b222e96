//! Two tiers of compiled code, for a service's cold start.
//!
//! A plugin the compiled-code cache does not hold yet is first compiled by a
//! second engine that compiles fast and runs slower (Cranelift without its
//! optimiser, single-pass register allocation), so the service listens and
//! runs it at once. Its optimised code is then compiled on one low-priority
//! thread, written to the cache, and swapped in; runs already under way
//! finish on the code they started with. A restart finds the optimised code
//! in the cache and never uses the quick tier.
//!
//! Measured on 2 cores (docs/performance.md): a cold start with the eight
//! bundled plugins took 334–414 ms against 528–797 ms, and every plugin was
//! on optimised code 1.4 s later (2.0 s under a saturating load). How much
//! slower a run is on quick code was not measured for the two settings
//! together; as the only engine, single-pass allocation alone cost an
//! invocation 20 % and no optimiser alone 6 %.

use crate::locks::{MutexExt, RwLockExt};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, OptLevel, RegallocAlgorithm};

use super::state::RunState;
use crate::bindings::RunbookPre;

/// Which code a plugin is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Compiled fast at load; the optimised code is on its way.
    Quick,
    /// Cranelift's optimised code (from the cache or compiled at load).
    Optimised,
}

/// Where compiled code is kept, and whether a miss may start on quick code.
#[derive(Debug, Clone)]
pub struct CodeCache {
    pub dir: PathBuf,
    /// Start a plugin the cache misses on the quick tier and optimise it in
    /// the background. For long-lived processes: a one-shot command would
    /// exit before the optimised code is written.
    pub tiered: bool,
}

/// Code ready to instantiate, and which tier it is.
pub(crate) struct Compiled {
    pub(crate) pre: RunbookPre<RunState>,
    tier: Tier,
}

impl Compiled {
    pub(crate) fn new(pre: RunbookPre<RunState>, tier: Tier) -> Compiled {
        Compiled { pre, tier }
    }
}

/// A plugin's code, shared by every copy of the plugin and replaced once
/// when the optimised code is ready.
#[derive(Clone)]
pub(crate) struct Code(Arc<RwLock<Arc<Compiled>>>);

impl Code {
    pub(crate) fn new(compiled: Arc<Compiled>) -> Code {
        Code(Arc::new(RwLock::new(compiled)))
    }

    /// The code the next run starts on.
    pub(crate) fn current(&self) -> Arc<Compiled> {
        self.0.read_locked().clone()
    }

    pub(crate) fn tier(&self) -> Tier {
        self.current().tier
    }

    fn replace(&self, pre: RunbookPre<RunState>) {
        *self.0.write_locked() = Arc::new(Compiled::new(pre, Tier::Optimised));
    }
}

/// The quick tier's engine and its linker.
pub(crate) struct QuickTier {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<RunState>,
}

/// The quick tier's engine settings: the sandbox's (component model, epoch
/// deadlines) with the compiler's cheapest code generation. Its memories are
/// allocated on demand: the pooling allocator's reservation is the main
/// engine's, and this engine serves only the first seconds.
pub(crate) fn quick_config(mut cfg: Config) -> Config {
    cfg.cranelift_opt_level(OptLevel::None)
        .cranelift_regalloc_algorithm(RegallocAlgorithm::SinglePass);
    cfg
}

type Job = Box<dyn FnOnce() + Send>;

/// The one thread that compiles optimised code, at a low priority (nice 10)
/// so that neither the quick compiles of a start-up nor the runs being
/// served wait for it. From a cold start under a saturating load (wrk, 64
/// connections, `?wait=true`) the nine plugins of `scripts/load.sh` were all
/// on optimised code after 2.0 s at nice 10 (2.6 s at nice 19).
#[derive(Default)]
pub(crate) struct Optimiser {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Optimiser {
    /// Compiles `work` in the background, then puts its code in `code`.
    pub(crate) fn submit(
        &self,
        plugin: String,
        code: Code,
        work: impl FnOnce() -> anyhow::Result<RunbookPre<RunState>> + Send + 'static,
    ) {
        let job: Job = Box::new(move || match work() {
            Ok(pre) => {
                code.replace(pre);
                tracing::info!(plugin, "optimised code in place");
            }
            Err(e) => {
                tracing::warn!(plugin, error = %format!("{e:#}"), "optimising failed; the plugin keeps its quick code")
            }
        });
        let mut jobs = self.jobs.locked();
        let job = match jobs.as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                // The thread is gone (a job panicked): start another.
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("remedy-optimise".into())
            .spawn(move || {
                lower_thread_priority(10);
                while let Ok(job) = rx.recv() {
                    job();
                    while let Ok(job) = rx.try_recv() {
                        job();
                    }
                    release_freed_memory();
                }
            });
        match spawned {
            Ok(_) => {
                // The thread was just spawned and holds the receiver.
                let _ = tx.send(job);
                *jobs = Some(tx);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the optimiser thread; compiling in place");
                job();
            }
        }
    }
}

/// Hands back to the system the memory the compiles freed. The allocator
/// (mimalloc in the binary) keeps freed pages for reuse, and a compile's
/// are not reused by anything a service does next: after a cold start with
/// the eight bundled plugins it held about 20 MB of them: an idle service
/// held 60-71 MB with them, 51-59 MB once they are handed back.
fn release_freed_memory() {
    // SAFETY: takes no pointers; safe whichever allocator is global (it
    // then finds nothing of mimalloc's to collect).
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Adds `by` to the calling thread's nice value (Linux schedules threads
/// one by one), relative to what the process was started with; lowering
/// a priority needs no privilege. Best effort: a thread that cannot be
/// lowered runs at the process's priority.
pub(crate) fn lower_thread_priority(by: i32) {
    let tid = thread_id();
    let lowered = thread_nice().is_some_and(|now| {
        // SAFETY: a plain syscall on the calling thread's own id.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, (now + by).min(19)) == 0 }
    });
    if !lowered {
        tracing::debug!(by, "could not lower a thread's priority");
    }
}

/// The calling thread's nice value.
pub(crate) fn thread_nice() -> Option<i32> {
    let tid = thread_id();
    // SAFETY: plain syscalls on the calling thread's own id and errno;
    // -1 is also a valid nice value, so errno tells an error apart.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, tid);
        (*libc::__errno_location() == 0).then_some(nice)
    }
}

fn thread_id() -> libc::id_t {
    // SAFETY: gettid takes nothing and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::id_t }
}
