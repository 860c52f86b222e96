//! A runtime of its own for what a critical alert starts.
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

pub struct UrgentRuntime(Option<Runtime>);

impl UrgentRuntime {
    pub fn new() -> std::io::Result<UrgentRuntime> {
        let rt = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("remedy-urgent")
            .enable_all()
            .build()?;
        Ok(UrgentRuntime(Some(rt)))
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

impl Drop for UrgentRuntime {
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
    use super::UrgentRuntime;

    /// Urgent work runs on its own thread, and the service, dropped inside
    /// the main runtime, can drop this one without panicking.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn urgent_work_runs_on_its_own_thread_and_the_runtime_drops_inside_another() {
        let urgent = UrgentRuntime::new().unwrap();
        let name = urgent
            .spawn(async { std::thread::current().name().map(str::to_string) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("remedy-urgent"));
        drop(urgent);
    }
}
