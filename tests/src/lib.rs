//! Shared helpers of the end-to-end tests (the tests themselves are in
//! `tests/tests/`). The test plugins are compiled by build.rs.

use std::path::PathBuf;

/// Directory holding the compiled test plugins (`hostile.wasm`, ...).
pub const TEST_PLUGIN_DIR: &str = env!("REMEDY_TEST_PLUGIN_DIR");

/// Path of a compiled test plugin, e.g. `test_plugin("hostile")`.
pub fn test_plugin(name: &str) -> PathBuf {
    PathBuf::from(TEST_PLUGIN_DIR).join(format!("{}.wasm", name.replace('-', "_")))
}
