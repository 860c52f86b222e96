//! Loading a plugin: validate the bytes, compile, check the imports against
//! the grants, pre-instantiate once, and ask it to describe itself.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::engine::Runtime;
use super::tiers::{Code, CodeCache, Compiled, Tier};
use crate::bindings::RunbookPre;
use crate::config::{Mode, Pin, Schedule};
use crate::grants::{Capability, Grants};

/// The WIT package plugins import from.
pub const PACKAGE: &str = "remedy:plugin";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    #[error("a core WebAssembly module, not a component: build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)")]
    CoreModule,
    #[error("invalid component: {0}")]
    Compile(String),
    #[error("plugin `{plugin}` imports interface `{interface}`, which is not granted to it (grant it with `grants = [\"{short}\", ...]` or `--grant {short}`)")]
    Ungranted {
        plugin: String,
        interface: String,
        short: String,
    },
    #[error("imports `{0}`, which Remedy does not provide")]
    UnknownImport(String),
    #[error("imports `{0}`: plugins get no network but the `probe` interface. Build without HTTP: componentize-js `-d http -d fetch-event` (what `remedy new --lang js` writes), or drop the import from the world")]
    WasiHttp(String),
    #[error("plugin `{plugin}` imports every interface of the `runbook` world, and {ungranted} are not granted to it: build it against a world that imports only the interfaces it uses (`remedy new --uses …` writes one; `remedy wit DIR` exports the WIT), or grant them")]
    WholeWorld { plugin: String, ungranted: String },
    #[error("not a `remedy:plugin/runbook` component: {0}")]
    WrongWorld(String),
    #[error("describe() failed: {0}")]
    Describe(String),
    #[error("plugin `{plugin}` needs {needs_mb} MiB of memory to start (its memory image), more than the {limit_mb} MiB it is given: set `memory_mb = {}` under [plugins.{plugin}] (or `--memory-mb`); at most 512", (needs_mb + 16).min(512))]
    Memory {
        plugin: String,
        needs_mb: usize,
        limit_mb: usize,
    },
}

/// What a plugin says about itself (its `describe()`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub alerts: Vec<String>,
}

/// How the operator lets a plugin run: bundled defaults, then the config
/// file, then command-line overrides, resolved once (see
/// the invoker's `settings` module). Every consumer reads these.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    pub grants: Arc<Grants>,
    /// Config keys as strings, sorted.
    pub config: BTreeMap<String, String>,
    pub mode: Mode,
    pub detect_timeout: Duration,
    pub mitigate_timeout: Duration,
    pub memory_bytes: usize,
    pub limits: Arc<crate::guardrails::Limits>,
    /// Escalation priority when verification fails (alert label first).
    pub priority: crate::escalation::Priority,
    /// The one directory the plugin may read, as `/data`.
    pub files: Option<std::path::PathBuf>,
    /// Which alerts reach the plugin, and what they act on.
    pub routing: Arc<super::Routing>,
    pub schedules: Arc<Vec<Schedule>>,
    /// The only digest the plugin may have.
    pub pin: Option<Pin>,
}

impl Default for PluginSettings {
    fn default() -> Self {
        Self {
            grants: Arc::default(),
            config: BTreeMap::new(),
            mode: Mode::DryRun,
            detect_timeout: Duration::from_millis(2_000),
            mitigate_timeout: Duration::from_millis(10_000),
            memory_bytes: 32 << 20,
            limits: Arc::default(),
            priority: crate::escalation::Priority::P1,
            files: None,
            routing: Arc::default(),
            schedules: Arc::default(),
            pin: None,
        }
    }
}

/// A loaded plugin, ready to instantiate.
pub struct Plugin {
    pub info: PluginInfo,
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
    /// Every import of the component, as `namespace:package/interface@version`.
    pub imports: Vec<String>,
    pub settings: PluginSettings,
    /// Whether the file came with a trusted signature (set by the loader;
    /// bundled plugins are `unsigned`, being part of the binary).
    pub signed: crate::signature::Signed,
    /// When its trusted signature says it was signed (unix seconds, from
    /// the signed `timestamp:` of minisign's trusted comment).
    pub signed_at: Option<u64>,
    pub(crate) code: Code,
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The same compiled plugin under other settings (a `remedy test`
    /// fixture's grants and scopes).
    pub fn with_settings(&self, settings: PluginSettings) -> Plugin {
        Plugin {
            info: self.info.clone(),
            digest: self.digest.clone(),
            imports: self.imports.clone(),
            settings,
            signed: self.signed.clone(),
            signed_at: self.signed_at,
            code: self.code.clone(),
        }
    }

    /// Which code the next run starts on (see `tiers`).
    pub fn tier(&self) -> Tier {
        self.code.tier()
    }

    /// Name, version and digest, as records name the plugin.
    pub fn plugin_ref(&self) -> crate::record::PluginRef {
        crate::record::PluginRef {
            name: self.info.name.clone(),
            version: self.info.version.clone(),
            digest: self.digest.clone(),
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Tells a component from a core module from anything else.
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    // Bytes 6..8 are the layer: 0 for core modules, 1 for components.
    match bytes[6..8] {
        [0, 0] => Err(LoadError::CoreModule),
        _ => Ok(()),
    }
}

/// The interface name inside `remedy:plugin/<name>@<version>`.
fn remedy_interface(import: &str) -> Option<&str> {
    let rest = import.strip_prefix(PACKAGE)?.strip_prefix('/')?;
    Some(rest.split('@').next().unwrap_or(rest))
}

impl Runtime {
    /// Compiles and pre-instantiates `bytes`; `settings_for` gives the
    /// settings for the name the plugin reports.
    pub async fn load(
        &self,
        bytes: &[u8],
        cache: Option<&CodeCache>,
        settings_for: impl FnOnce(&str) -> PluginSettings,
    ) -> Result<Plugin, LoadError> {
        check_header(bytes)?;
        let digest = digest(bytes);
        // Compiling takes seconds for a large plugin: off the async workers,
        // so a hot reload never stalls the runs and requests being served.
        // One look in the cache, whichever tier compiles on a miss.
        let hit = cache.and_then(|c| cached(&self.engine, &digest, &c.dir));
        let quick = match cache {
            Some(c) if c.tiered && hit.is_none() => match self.quick() {
                Ok(q) => Some(q),
                Err(e) => {
                    tracing::warn!(error = %e, "no quick tier; compiling optimised code at load");
                    None
                }
            },
            _ => None,
        };
        let engine = quick.map_or(&self.engine, |q| &q.engine).clone();
        // Quick code is never cached: the optimiser writes the cache.
        let store_in = cache.filter(|_| quick.is_none()).map(|c| c.dir.clone());
        let (owned, d) = (bytes.to_vec(), digest.clone());
        let component = tokio::task::spawn_blocking(move || {
            compile(&engine, &owned, &d, hit.as_deref(), store_in.as_deref())
        })
        .await
        .map_err(|e| LoadError::Compile(format!("the compile task failed: {e}")))??;
        let imports: Vec<String> = component
            .component_type()
            .imports(component.engine())
            .map(|(name, _)| name.to_string())
            .collect();
        if let Some(http) = imports.iter().find(|i| i.starts_with("wasi:http/")) {
            return Err(LoadError::WasiHttp(http.clone()));
        }
        for import in &imports {
            let known = match remedy_interface(import) {
                Some(i) => i == "types" || Capability::parse(i).is_some(),
                None => import.starts_with("wasi:"),
            };
            if !known {
                return Err(LoadError::UnknownImport(import.clone()));
            }
        }
        let linker = quick.map_or(&*self.linker, |q| &q.linker);
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::UnknownImport(format!("{e:#}")))?;
        let pre = RunbookPre::new(pre).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let tier = if quick.is_some() {
            Tier::Quick
        } else {
            Tier::Optimised
        };
        let compiled = Arc::new(Compiled::new(pre, tier));
        let (info, needs) = self.describe(&compiled.pre).await?;
        let settings = settings_for(&info.name);
        if needs > settings.memory_bytes {
            // Every run would fail before the plugin's first line: say so now.
            return Err(LoadError::Memory {
                plugin: info.name.clone(),
                needs_mb: needs.div_ceil(1 << 20),
                limit_mb: settings.memory_bytes >> 20,
            });
        }
        let ungranted: Vec<(&String, Capability)> = imports
            .iter()
            .filter_map(|i| Some((i, remedy_interface(i).and_then(Capability::parse)?)))
            .filter(|(_, cap)| !settings.grants.has(*cap))
            .collect();
        if let [(interface, cap), ..] = ungranted[..] {
            let used: Vec<&str> = imports
                .iter()
                .filter_map(|i| remedy_interface(i).and_then(Capability::parse))
                .map(|c| c.as_str())
                .collect();
            if used.len() == Capability::ALL.len() {
                // The toolchains' default: the whole `runbook` world.
                return Err(LoadError::WholeWorld {
                    plugin: info.name.clone(),
                    ungranted: ungranted
                        .iter()
                        .map(|(_, c)| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            return Err(LoadError::Ungranted {
                plugin: info.name.clone(),
                interface: interface.clone(),
                short: cap.as_str().to_string(),
            });
        }
        let code = Code::new(compiled);
        if let (Some(cache), Tier::Quick) = (cache, tier) {
            tracing::info!(plugin = %info.name, %digest, "compiled on the quick tier; optimising in the background");
            self.optimise(info.name.clone(), &code, bytes, &digest, cache);
        }
        Ok(Plugin {
            info,
            digest,
            imports,
            settings,
            signed: crate::signature::Signed::Unsigned,
            signed_at: None,
            code,
        })
    }

    /// Compiles the optimised code of a plugin loaded on the quick tier,
    /// writes it to the cache, and swaps it in.
    fn optimise(&self, plugin: String, code: &Code, bytes: &[u8], digest: &str, cache: &CodeCache) {
        let (engine, linker) = (self.engine.clone(), self.linker.clone());
        let (bytes, digest, dir) = (bytes.to_vec(), digest.to_string(), cache.dir.clone());
        self.optimiser.submit(plugin, code.clone(), move || {
            // Load already found no usable cache entry: compile and store.
            let component = compile(&engine, &bytes, &digest, None, Some(&dir))?;
            let pre = linker.instantiate_pre(&component)?;
            Ok(RunbookPre::new(pre)?)
        });
    }
}

/// The cache file for `digest` under `engine`'s configuration.
fn cache_file(engine: &wasmtime::Engine, digest: &str, dir: &Path) -> std::path::PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!(
        "{}-{:016x}.cwasm",
        digest.trim_start_matches("sha256:"),
        h.finish()
    ))
}

/// The cache file for `digest`, if one exists that only this user could
/// have written.
fn cached(engine: &wasmtime::Engine, digest: &str, dir: &Path) -> Option<std::path::PathBuf> {
    let file = cache_file(engine, digest, dir);
    if !file.exists() {
        return None;
    }
    match crate::private_fs::written_only_by_us(dir, &file) {
        Ok(()) => Some(file),
        Err(why) => {
            tracing::warn!(file = %file.display(), %why, "ignoring a compiled-code cache entry others could have written; recompiling");
            None
        }
    }
}

/// Removes what cache writes cut short left in `dir`: a process killed
/// while writing code leaves its `<entry>.tmp<pid>`, which nothing reads.
/// Only for a directory one process owns (a service's data directory): in
/// a shared one, another process may be writing its own.
pub fn remove_unfinished_cache_writes(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let ours = format!("tmp{}", std::process::id());
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let unfinished = path
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| x.starts_with("tmp") && x != ours);
        if unfinished {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "removed an unfinished compiled-code cache write")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove an unfinished compiled-code cache write")
                }
            }
        }
    }
}

/// A compile error, with the fix when it is a build setting an author can
/// change: this engine has no component-model async.
fn compile_hint(msg: String) -> String {
    if msg.contains("async") {
        format!("{msg}. Remedy runs components without component-model async: build the plugin synchronously (jco's QuickJS backend: `--backend-qjs-disable-async`)")
    } else {
        msg
    }
}

/// Reads the code from `hit` (a cache entry `cached` found), else compiles
/// `bytes` and, given `store_in`, writes the code there for the same digest
/// and engine configuration.
fn compile(
    engine: &wasmtime::Engine,
    bytes: &[u8],
    digest: &str,
    hit: Option<&Path>,
    store_in: Option<&Path>,
) -> Result<Component, LoadError> {
    if let Some(file) = hit {
        // SAFETY: `cached` found the file, written by `serialize` below for
        // the same digest and engine configuration, in a directory and file
        // only this user can write; wasmtime still checks its header and
        // compatibility.
        match unsafe { Component::deserialize_file(engine, file) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "ignoring unusable compiled-code cache entry")
            }
        }
    }
    let component = Component::new(engine, bytes)
        .map_err(|e| LoadError::Compile(compile_hint(format!("{e:#}"))))?;
    let Some(dir) = store_in else {
        return Ok(component);
    };
    let file = cache_file(engine, digest, dir);
    let write = || -> std::io::Result<()> {
        crate::private_fs::create_dir(dir)?;
        let bytes = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        crate::private_fs::write_new(&tmp, &bytes)?;
        std::fs::rename(&tmp, &file)
    };
    if let Err(e) = write() {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write the compiled-code cache");
    }
    Ok(component)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert_eq!(
            remedy_interface("remedy:plugin/database@0.1.0"),
            Some("database")
        );
        assert_eq!(remedy_interface("wasi:cli/stdout@0.2.0"), None);
    }
}
