//! Signed plugin files in a running service: a plugin with its own keys
//! stays pinned when its signature is deleted, and an older signed build
//! dropped back in place is refused — across restarts — unless the
//! operator allows the rollback.

use std::path::Path;
use std::process::Command;

use remedy_e2e::test_plugin;
use serde_json::{json, Value};

mod common;
use common::*;

/// A minisign key pair without a password; the public key's `RW…` line.
fn keypair(dir: &Path) -> String {
    let out = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(dir.join("k.pub"))
        .arg("-s")
        .arg(dir.join("k.key"))
        .output()
        .expect("minisign is needed (apt install minisign)");
    assert!(out.status.success(), "{out:?}");
    let public = std::fs::read_to_string(dir.join("k.pub")).unwrap();
    public.lines().nth(1).unwrap().trim().to_string()
}

/// Signs `file`, claiming it was signed at unix time `at`.
fn sign_at(dir: &Path, file: &Path, at: u64) {
    let name = file.file_name().unwrap().to_string_lossy();
    let out = Command::new("minisign")
        .args(["-S", "-s"])
        .arg(dir.join("k.key"))
        .arg("-m")
        .arg(file)
        .arg("-t")
        .arg(format!("timestamp:{at}\tfile:{name}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn config(dir: &Path, public: &str, extra: &str) -> String {
    format!(
        "[server]\ndata_dir = \"{}\"\nplugins_dir = \"{}\"\n[plugins.planner]\ngrants = [\"breaker\"]\ntrusted_keys = [\"{public}\"]\n{extra}\n",
        dir.join("data").display(),
        dir.join("plugins").display(),
    )
}

/// The rows of `GET /v1/plugins` about the planner (by name or file).
async fn planner(server: &Server) -> Vec<Value> {
    server.get("/v1/plugins").await["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["name"] == "planner" || p["source"].as_str().unwrap_or("").ends_with("planner.wasm")
        })
        .cloned()
        .collect()
}

async fn reload(server: &Server) {
    let (code, r) = server.post("/v1/plugins/reload", json!({})).await;
    assert_eq!(code, 200, "{r}");
}

fn errors(rows: &[Value]) -> String {
    rows.iter()
        .filter_map(|r| r["error"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_with_its_own_keys_refuses_an_unsigned_file() {
    let dir = tempfile::tempdir().unwrap();
    let public = keypair(dir.path());
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let wasm = plugins.join("planner.wasm");
    std::fs::copy(test_plugin("planner"), &wasm).unwrap();
    // No `.minisig`, and require_signature is off: the plugin's own keys
    // still pin it.
    let server = start(dir.path(), &config(dir.path(), &public, ""), &[]);
    let rows = planner(&server).await;
    assert!(rows.iter().all(|r| r["status"] == "error"), "{rows:#?}");
    let e = errors(&rows);
    assert!(
        e.contains("planner")
            && e.contains("own trusted_keys")
            && e.contains("planner.wasm.minisig"),
        "{e}"
    );
    // Signed by its key: it serves.
    sign_at(dir.path(), &wasm, 2_000_000_000);
    reload(&server).await;
    let rows = planner(&server).await;
    assert!(
        rows.iter()
            .any(|r| r["status"] == "loaded" && r["signed_by"] == public.as_str()),
        "{rows:#?}"
    );
    // The signature deleted again: refused, the signed version keeps serving.
    std::fs::remove_file(plugins.join("planner.wasm.minisig")).unwrap();
    reload(&server).await;
    let rows = planner(&server).await;
    assert!(
        rows.iter()
            .any(|r| r["name"] == "planner" && r["signed_by"] == public.as_str()),
        "{rows:#?}"
    );
    assert!(errors(&rows).contains("own trusted_keys"), "{rows:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_signed_build_is_refused_until_the_operator_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let public = keypair(dir.path());
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let wasm = plugins.join("planner.wasm");
    let old = std::fs::read(test_plugin("planner")).unwrap();
    // Other bytes, same plugin: a custom section appended.
    let mut new = old.clone();
    new.extend_from_slice(&[0, 6, 5, b'x', b'-', b'n', b'e', b'w']);
    std::fs::write(&wasm, &new).unwrap();
    sign_at(dir.path(), &wasm, 2_000_000_000);
    let cfg = config(dir.path(), &public, "");
    let server = start(dir.path(), &cfg, &[]);
    let digest = |rows: &[Value]| {
        rows.iter()
            .find(|r| r["name"] == "planner")
            .map(|r| r["digest"].clone())
            .unwrap_or(Value::Null)
    };
    let rows = planner(&server).await;
    let new_digest = digest(&rows);
    assert!(new_digest.is_string(), "{rows:#?}");

    // The old build, validly signed a year earlier, dropped back in place.
    std::fs::write(&wasm, &old).unwrap();
    sign_at(dir.path(), &wasm, 2_000_000_000 - 365 * 86_400);
    reload(&server).await;
    let rows = planner(&server).await;
    assert_eq!(
        digest(&rows),
        new_digest,
        "the newer build keeps serving: {rows:#?}"
    );
    let e = errors(&rows);
    assert!(
        e.contains("allow_older_signature") && e.contains("2033-05-18T03:33:20Z"),
        "{e}"
    );

    // A restart doesn't forget what was trusted: with only the old file,
    // nothing serves as planner.
    drop(server);
    let server = start(dir.path(), &cfg, &[]);
    let rows = planner(&server).await;
    assert!(rows.iter().all(|r| r["status"] == "error"), "{rows:#?}");
    assert!(errors(&rows).contains("allow_older_signature"), "{rows:#?}");
    drop(server);

    // The operator rolls back on purpose.
    let server = start(
        dir.path(),
        &config(dir.path(), &public, "allow_older_signature = true"),
        &[],
    );
    let rows = planner(&server).await;
    assert!(
        rows.iter()
            .any(|r| r["status"] == "loaded" && r["digest"] != new_digest),
        "{rows:#?}"
    );
}
