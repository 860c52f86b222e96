//! Loading plugins into the registry: the bundled and configured ones at
//! start, and the watched `plugins_dir`, read through a capability handle
//! so that a file cannot lead the service outside it.

use super::*;
use crate::locks::MutexExt;

impl Service {
    pub(super) async fn load(&self, key: &str, source: &Source) {
        match self.remedy.load_source(source).await {
            Ok(p) => match self.older_than_trusted(&p).await {
                Some(error) => self.load_failed(key, source.to_string(), error).await,
                None => self.loaded(source.to_string(), p).await,
            },
            Err(e) => {
                self.load_failed(key, source.to_string(), e.to_string())
                    .await
            }
        }
    }

    async fn loaded(&self, source: String, p: Plugin) {
        tracing::info!(plugin = %p.name(), digest = %p.digest, %source, "plugin loaded");
        self.audit(
            None,
            Some(p.name()),
            "plugin.loaded",
            serde_json::json!({
                "source": source,
                "digest": p.digest,
                "version": p.info.version,
                "signed_at": p.signed_at,
            }),
        )
        .await;
        self.registry.set_loaded(source, p);
    }

    /// Why a signed file must not replace what was trusted before: it was
    /// signed earlier than the newest file trusted for its name (by this
    /// replica now, or by any replica as long as the audit log keeps the
    /// load), so it may be an old, vulnerable build dropped back in place.
    async fn older_than_trusted(&self, p: &Plugin) -> Option<String> {
        let at = p.signed_at?;
        let name = p.name();
        if self
            .remedy
            .config
            .plugins
            .get(name)
            .is_some_and(|pc| pc.allow_older_signature)
        {
            return None;
        }
        let loaded = self.registry.get(name).and_then(|q| q.signed_at);
        let audited = match self
            .store
            .list_audit(crate::store::AuditFilter {
                plugin: Some(name.to_string()),
                event: Some("plugin.loaded".into()),
                limit: Some(10_000),
                ..Default::default()
            })
            .await
        {
            Ok(events) => events
                .iter()
                .filter_map(|e| e.detail["signed_at"].as_u64())
                .max(),
            // Unknown history: what this replica holds still counts.
            Err(e) => {
                tracing::warn!(plugin = name, error = %e, "signing history not read");
                None
            }
        };
        let newest = loaded.max(audited)?;
        (at < newest).then(|| {
            format!(
                "signed at {} ({at}), before the newest file trusted for `{name}` (signed at {} ({newest})): \
                 refused as a possible rollback to an old build; to roll back on purpose set \
                 `[plugins.{name}] allow_older_signature = true`",
                unix_time(at),
                unix_time(newest),
            )
        })
    }

    async fn load_failed(&self, key: &str, source: String, error: String) {
        tracing::warn!(%source, %error, "plugin failed to load");
        self.metrics.load_failed(metric_name(key));
        self.audit(
            None,
            Some(key),
            "plugin.load_failed",
            serde_json::json!({"source": source, "error": error}),
        )
        .await;
        self.registry.set_error(key, source, error);
    }

    /// Loads new or changed `.wasm` files of the plugins directory; a file
    /// that fails leaves the version loaded before serving.
    pub async fn scan_plugins_dir(&self) {
        let Some(dir) = self.remedy.config.server.plugins_dir.clone() else {
            return;
        };
        let mut seen = Vec::new();
        let handle = match self.plugins_dir_handle(&dir) {
            Ok(h) => h,
            Err(e) => {
                self.load_failed(
                    &format!("dir:{}", dir.display()),
                    dir.display().to_string(),
                    format!("cannot open plugins directory: {e}"),
                )
                .await;
                return;
            }
        };
        let entries = match handle.entries() {
            Ok(e) => e,
            Err(e) => {
                self.load_failed(
                    &format!("dir:{}", dir.display()),
                    dir.display().to_string(),
                    format!("cannot read plugins directory: {e}"),
                )
                .await;
                return;
            }
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let path = dir.join(&file_name);
            if path.extension().is_none_or(|x| x != "wasm") {
                continue;
            }
            seen.push(path.clone());
            let Ok(meta) = entry.metadata() else { continue };
            let mut sig_name = file_name.clone();
            sig_name.push(".minisig");
            // The signature is part of the file: one arriving (or changing)
            // after its `.wasm` reloads it too.
            let sig_meta = handle.metadata(&sig_name).ok();
            let modified = |m: &cap_std::fs::Metadata| {
                m.modified()
                    .map(|t| t.into_std())
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            };
            let stamp = (
                modified(&meta).max(sig_meta.as_ref().map_or(SystemTime::UNIX_EPOCH, modified)),
                meta.len() + sig_meta.as_ref().map_or(0, |m| m.len()),
            );
            let previous = self.files.locked().get(&path).cloned();
            if previous.as_ref().is_some_and(|(m, l, _)| (*m, *l) == stamp) {
                continue;
            }
            let old_name = previous.and_then(|p| p.2);
            let bytes = handle.read(&file_name);
            let sig = crate::signature::read_sig(handle.open(&sig_name));
            let name = self
                .load_file(&path, bytes, sig.as_deref(), old_name.as_deref())
                .await;
            self.files
                .locked()
                .insert(path, (stamp.0, stamp.1, name.or(old_name)));
        }
        // Files that disappeared take their plugin with them.
        let gone: Vec<(PathBuf, Option<String>)> = {
            let mut files = self.files.locked();
            let gone: Vec<_> = files
                .keys()
                .filter(|p| !seen.contains(p))
                .cloned()
                .collect();
            gone.into_iter()
                .map(|p| {
                    let n = files.remove(&p).and_then(|e| e.2);
                    (p, n)
                })
                .collect()
        };
        for (path, name) in gone {
            tracing::info!(file = %path.display(), "plugin file removed");
            self.registry
                .remove(&name.unwrap_or_else(|| file_key(&path)));
        }
    }

    /// The handle of `plugins_dir`, opened on first use.
    fn plugins_dir_handle(&self, dir: &Path) -> std::io::Result<Arc<cap_std::fs::Dir>> {
        let mut slot = self.plugins_dir.locked();
        if let Some(h) = slot.as_ref() {
            return Ok(h.clone());
        }
        let h = Arc::new(cap_std::fs::Dir::open_ambient_dir(
            dir,
            cap_std::ambient_authority(),
        )?);
        *slot = Some(h.clone());
        Ok(h)
    }

    /// Returns the plugin name the file loaded as.
    async fn load_file(
        &self,
        path: &Path,
        bytes: std::io::Result<Vec<u8>>,
        sig: Option<&str>,
        old_name: Option<&str>,
    ) -> Option<String> {
        let key = old_name.map(String::from).unwrap_or_else(|| file_key(path));
        let loaded = match bytes {
            Ok(b) => self.remedy.load_file_bytes(&b, sig, path).await,
            Err(error) => Err(crate::remedy::PluginError::Read {
                path: path.to_path_buf(),
                error,
            }),
        };
        match loaded {
            Ok(p) => {
                let name = p.name().to_string();
                // A file in plugins_dir may not take over a name another
                // source serves (a bundled runbook, a configured file,
                // another file): it would inherit that name's place in
                // routing and config.
                let owner = self.registry.source_of(&name);
                let file = path.display().to_string();
                if let Some(owner) = owner.filter(|o| *o != file) {
                    self.load_failed(
                        &key,
                        file.clone(),
                        format!(
                            "{file} reports the plugin name `{name}`, which {owner} already serves; give the plugin a name of its own"
                        ),
                    )
                    .await;
                    return None;
                }
                if let Some(error) = self.older_than_trusted(&p).await {
                    self.load_failed(&key, file, error).await;
                    return None;
                }
                if old_name.is_none() {
                    self.registry.remove(&file_key(path));
                }
                self.loaded(path.display().to_string(), p).await;
                Some(name)
            }
            Err(e) => {
                self.load_failed(&key, path.display().to_string(), e.to_string())
                    .await;
                None
            }
        }
    }
}

fn unix_time(s: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(s).unwrap_or(i64::MAX), 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| s.to_string())
}

/// The name a load failure is counted under in `/metrics`, which needs no
/// token: the plugin's name (`file:NAME.wasm` for a file that never
/// loaded), never a path of the host; the path is in the log and in the
/// authenticated `/v1/plugins`.
fn metric_name(key: &str) -> &str {
    if key.starts_with("dir:") {
        "plugins_dir"
    } else {
        key
    }
}
