//! Used by build scripts (host, tests) to compile a plugin workspace for
//! `wasm32-wasip2`, so a fresh checkout needs no prebuilt `.wasm`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the workspace at `workspace` (release, wasm32-wasip2) into the
/// target directory `wasm-<label>` beside the host's own, tells Cargo when to
/// rebuild, and returns the directory holding the `.wasm` files.
pub fn build_plugins(workspace: &Path, label: &str) -> PathBuf {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: share one wasm
    // target dir per host target dir, whatever the host profile.
    let target_root = out_dir
        .ancestors()
        .nth(4)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.clone());
    let target_dir = target_root.join(format!("wasm-{label}"));

    watch(workspace);
    let wit = workspace.join("../wit");
    if wit.exists() {
        watch(&wit);
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    // Nothing of the host build's flags applies to the wasm build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo for {}: {e}", workspace.display()));
    if !status.success() {
        panic!(
            "building the plugins in {} for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)",
            workspace.display()
        );
    }
    target_dir.join("wasm32-wasip2").join("release")
}

/// Re-run the build script when anything but build output changes.
fn watch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
