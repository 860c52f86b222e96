//! The recording sink lives in the remedy-e2e library, shared with the
//! host's own tests.

pub use remedy_e2e::sink::*;
