//! `remedy test`: a runbook against fixtures, with a verdict per case.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use remedy::fixture::{self, Fixture};
use remedy::remedy::Remedy;

use crate::output::terminal_safe;

/// The fixture files named: files as given, directories as their `*.toml`
/// files in name order; nothing named: `./fixtures`.
pub fn fixture_files(named: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let default = [PathBuf::from("fixtures")];
    let named = if named.is_empty() {
        &default[..]
    } else {
        named
    };
    let mut out = Vec::new();
    for p in named {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            if files.is_empty() {
                anyhow::bail!("{}: no fixture (*.toml) in this directory", p.display());
            }
            out.extend(files);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            anyhow::bail!(
                "{}: no such fixture file or directory{}",
                p.display(),
                if named == default {
                    " (name the fixtures, or run where ./fixtures is)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(out)
}

/// Runs every case; exit 0 when all pass. A fixture that does not parse
/// fails its case and the others still run.
pub async fn run(
    remedy: &Remedy,
    plugin: &remedy::runtime::Plugin,
    bundled: bool,
    files: &[PathBuf],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut failed = 0;
    let mut rows = Vec::new();
    for file in files {
        let started = std::time::Instant::now();
        let (title, verdict) = match Fixture::load(file) {
            Ok(fx) => {
                let v = fixture::run_case(remedy, plugin, &fx, bundled).await;
                (fx.title(file), Ok(v))
            }
            Err(e) => (display(file), Err(e.to_string())),
        };
        let ms = started.elapsed().as_millis();
        let failures = match &verdict {
            Ok(v) => v.failures.clone(),
            Err(e) => vec![e.clone()],
        };
        if !failures.is_empty() {
            failed += 1;
        }
        if json {
            rows.push(serde_json::json!({
                "fixture": display(file),
                "name": title,
                "passed": failures.is_empty(),
                "failures": failures,
                "record": verdict.as_ref().ok().map(|v| &v.record),
            }));
        } else {
            let word = if failures.is_empty() { "PASS" } else { "FAIL" };
            println!(
                "{}",
                terminal_safe(&format!("{word}  {title}  ({}, {ms} ms)", display(file)))
            );
            for f in &failures {
                println!("{}", terminal_safe(&format!("      - {f}")));
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{} case(s) of {}: {} passed, {failed} failed",
            files.len(),
            plugin.name(),
            files.len() - failed
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
