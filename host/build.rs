//! Compiles the bundled runbooks (plugins/) for wasm32-wasip2; `bundled.rs`
//! embeds them, so the binary carries its plugins and a checkout needs no
//! prebuilt `.wasm`.
fn main() {
    let manifest =
        std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dir = remedy_wasm_build::build_plugins(&manifest.join("../plugins"), "bundled");
    println!("cargo:rustc-env=REMEDY_BUNDLED_DIR={}", dir.display());
}
