//! Runtimes of their own for what alerts start: a critical alert's
//! receipt and runs above the service's own work, the other alerts' runs
//! below it.
//!
//! In a storm the service's runtime holds thousands of ready tasks, and
//! tokio polls them first come, first served: a critical alert's receipt,
//! woken when its commit lands, and its run, woken when a slot frees, each
//! waited behind all of them (measured: p50 ~60–120 ms from receipt to run
//! start). Lanes order who gets a slot, and the store's urgent queue orders
//! writes; this orders the CPU: a P0/P1 alert's receipt and runs are polled
//! on a thread of their own, which the kernel schedules beside the busy
//! workers rather than after their backlog.

use std::future::Future;

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

/// A tokio runtime beside the service's, for work whose CPU is ordered
/// apart from it.
pub struct SideRuntime(Option<Runtime>);

/// CFS gives a thread at nice +10 about a ninth of the weight of one at 0.
/// Measured in storms against +5: post answers p99 343–400 ms against
/// 366–543, three each.
const ALERT_RUNS_NICE: i32 = 10;

impl SideRuntime {
    /// A critical alert's receipt and runs, on a thread of their own.
    pub fn urgent() -> std::io::Result<SideRuntime> {
        SideRuntime::build("remedy-urgent", 1, None)
    }

    /// The runs of alerts that are not urgent, on threads the kernel
    /// schedules after the service's own (nice +10): in a storm the
    /// receipts, which Alertmanager waits for, get the cores first, and
    /// the runs the rest; with nothing else to do, the runs get them all.
    pub fn alert_runs() -> std::io::Result<SideRuntime> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        SideRuntime::build("remedy-alert-run", cores, Some(ALERT_RUNS_NICE))
    }

    fn build(name: &str, threads: usize, lower_by: Option<i32>) -> std::io::Result<SideRuntime> {
        let mut b = Builder::new_multi_thread();
        b.worker_threads(threads).thread_name(name).enable_all();
        match lower_by {
            Some(by) => b.on_thread_start(move || crate::runtime::tiers::lower_thread_priority(by)),
            // Above the service: its writes go to the store's reserved
            // capacity too (PostgreSQL's urgent connections).
            None => b.on_thread_start(crate::store::mark_urgent_thread),
        };
        Ok(SideRuntime(Some(b.build()?)))
    }

    pub fn spawn<F>(&self, f: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(rt) => rt.spawn(f),
            None => tokio::spawn(f),
        }
    }
}

impl Drop for SideRuntime {
    /// Dropping a runtime blocks, which panics inside another runtime:
    /// the service is dropped there. Its runs have drained by then.
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SideRuntime;

    /// Urgent work runs on its own thread, marked urgent for the store's
    /// reserved connections, and the service, dropped inside the main
    /// runtime, can drop this one without panicking.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn urgent_work_runs_on_its_own_thread_and_the_runtime_drops_inside_another() {
        let urgent = SideRuntime::urgent().unwrap();
        let (name, marked) = urgent
            .spawn(async {
                let name = std::thread::current().name().map(str::to_string);
                (name, crate::store::on_urgent_thread())
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("remedy-urgent"));
        assert!(marked, "the urgent runtime's thread is marked urgent");
        assert!(!crate::store::on_urgent_thread(), "the test's own is not");
        drop(urgent);
    }

    /// Alert runs are polled on threads of their own that the kernel
    /// schedules after the service's (nice +10), and the runtime drops inside
    /// another as the urgent one does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn alert_runs_are_polled_on_threads_of_lower_priority() {
        let runs = SideRuntime::alert_runs().unwrap();
        let (name, nice) = runs
            .spawn(async {
                let nice = crate::runtime::tiers::thread_nice();
                assert!(
                    !crate::store::on_urgent_thread(),
                    "alert runs are not urgent"
                );
                (std::thread::current().name().map(str::to_string), nice)
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("remedy-alert-run"));
        let ours = crate::runtime::tiers::thread_nice().unwrap();
        assert_eq!(
            nice,
            Some(ours + super::ALERT_RUNS_NICE),
            "nice {nice:?}, ours {ours}"
        );
        drop(runs);
    }
}
