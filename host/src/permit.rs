//! The permit a mutating backend method takes. Only the gate (its `act`)
//! makes one: outside this crate the constructor does not exist, so a call
//! that bypasses the gate does not compile; inside it, `host/tests/layers.rs`
//! fails on any call of `Permit::new` outside `gate/`. This module imports nothing: the gate and
//! the backends below it both depend on it, and it on neither.

/// Leave to run one action, after the gate has checked and (live) recorded
/// its intent. Not `Clone`: one permit, one action.
///
/// Outside the gate there is no way to get one, so a mutation that skips
/// the gate does not compile:
///
/// ```compile_fail
/// async fn bypass(db: &dyn remedy::capabilities::database::backend::DatabaseBackend) {
///     let _ = db.terminate(4242, "billing").await;
/// }
/// ```
///
/// ```compile_fail
/// let _ = remedy::gate::Permit::new();
/// ```
///
/// ```compile_fail
/// let _ = remedy::gate::Permit { _sealed: () };
/// ```
#[derive(Debug)]
pub struct Permit {
    _sealed: (),
}

impl Permit {
    /// Called by the gate alone (checked by `host/tests/layers.rs`).
    pub(crate) fn new() -> Permit {
        Permit { _sealed: () }
    }
}
