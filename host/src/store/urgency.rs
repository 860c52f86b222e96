//! Which writes are urgent: those made on a thread that serves a P0/P1
//! alert's receipt and runs (the service's urgent runtime marks its
//! threads). A store with capacity set aside serves them there, so that a
//! critical alert does not wait behind a storm's thousands of writes.

use std::cell::Cell;

thread_local! {
    static URGENT: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as serving urgent work, for as long as it lives.
pub fn mark_urgent_thread() {
    URGENT.with(|u| u.set(true));
}

/// Whether the calling thread serves urgent work.
pub fn on_urgent_thread() -> bool {
    URGENT.with(Cell::get)
}
