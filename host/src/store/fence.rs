//! Fencing: a run's writes carry the incarnation of the replica that
//! claimed it, and a shared store applies them only while that incarnation
//! still owns the run.
//!
//! A replica is an *incarnation*: its process id plus a generation that
//! grows each time it finds it was taken over (its heartbeat was older
//! than its lease and a survivor moved its work). The take-over deletes
//! the incarnation's `replicas` row in the transaction that moves its runs,
//! and every fenced write locks that row (`FOR KEY SHARE`) and checks the
//! run's owner in its own statement, so the two serialise: a write either
//! lands before the take-over (which then sees and moves it) or finds the
//! row gone and is refused. Correctness does not depend on how long a
//! stall lasts or on any clock of this process.
//!
//! The incarnation travels with the run's task (a task-local), not as an
//! argument, so that the plugin's host calls — deep inside the invocation —
//! reach the ledger with the token of the run they belong to. Writes made
//! outside a run (an escalation on a repeat, a verification) are not
//! fenced and take the replica's current incarnation.

use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static OWNER: Option<Arc<str>>;
}

/// Runs `f` as a run claimed by `owner` (`None`: unfenced, the embedded
/// store). A plain wrapper, not an `async fn`: one of those would hold
/// `f` twice (as its argument and in its state), and a storm holds
/// thousands of these futures while they wait for a run slot.
pub fn scope<F: Future>(
    owner: Option<Arc<str>>,
    f: F,
) -> tokio::task::futures::TaskLocalFuture<Option<Arc<str>>, F> {
    OWNER.scope(owner, f)
}

/// The incarnation the current run was claimed by, if inside one.
pub fn owner() -> Option<Arc<str>> {
    OWNER.try_with(Clone::clone).ok().flatten()
}

/// The incarnation id of generation `generation` of process `base`.
pub fn incarnation(base: &str, generation: u64) -> Arc<str> {
    if generation == 0 {
        Arc::from(base)
    } else {
        Arc::from(format!("{base}.{generation}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_owner_is_the_scope_s_and_only_inside_it() {
        assert!(owner().is_none());
        let inside = scope(Some(Arc::from("r.1")), async {
            tokio::task::yield_now().await;
            owner()
        })
        .await;
        assert_eq!(inside.as_deref(), Some("r.1"));
        assert!(owner().is_none());
        assert!(scope(None, async { owner() }).await.is_none());
        assert_eq!(&*incarnation("r", 0), "r");
        assert_eq!(&*incarnation("r", 2), "r.2");
    }
}
