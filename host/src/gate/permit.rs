//! The permit a mutating backend method takes. Only [`super::Gate::act`]
//! can make one (its constructor is private to the gate), so a call that
//! bypasses the gate does not compile. This module imports nothing: the
//! backends below the gate depend on it and on nothing else of the gate.

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
    pub(super) fn new() -> Permit {
        Permit { _sealed: () }
    }
}
