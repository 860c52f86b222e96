//! Compiles the test plugins (tests/plugins/: hostile, other-world, ...) for
//! wasm32-wasip2.
fn main() {
    let manifest =
        std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dir = remedy_wasm_build::build_plugins(&manifest.join("plugins"), "test-plugins");
    println!("cargo:rustc-env=REMEDY_TEST_PLUGIN_DIR={}", dir.display());
}
