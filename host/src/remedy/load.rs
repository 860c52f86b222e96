//! Loading plugins: bundled or from a file, checked against the digest
//! pin and the signatures the config requires before the bytes compile.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

/// Where a plugin comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Bundled(&'static str),
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Bundled(_) => write!(f, "bundled"),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(
        "no plugin named `{0}` (bundled: {1}); configure one with [plugins.{0}] path = \"...\""
    )]
    Unknown(String, String),
    // Not `source`: the message carries the cause already, and the CLI
    // prints the chain (it read "No such file…: No such file…").
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{origin}: {error}")]
    Load { origin: String, error: LoadError },
    #[error("{origin} reports the name `{reported}`, but is configured as [plugins.{configured}]: a plugin's name and its config section must agree")]
    Misnamed {
        origin: String,
        reported: String,
        configured: String,
    },
    #[error("{origin}: {error}")]
    Signature {
        origin: String,
        error: crate::signature::SignatureError,
    },
    #[error("{origin}: digest {digest} does not match the sha256 pinned for plugin `{name}`")]
    Pin {
        origin: String,
        name: String,
        digest: String,
    },
}

impl Remedy {
    /// Every plugin Remedy knows: the bundled ones and the configured files.
    pub fn sources(&self) -> Vec<(String, Source)> {
        let mut out: BTreeMap<String, Source> = bundled::BUNDLED
            .iter()
            .map(|b| (b.name.to_string(), Source::Bundled(b.name)))
            .collect();
        for (name, pc) in &self.config.plugins {
            if let Some(p) = &pc.path {
                out.insert(name.clone(), Source::File(p.clone()));
            }
        }
        out.into_iter().collect()
    }

    /// Loads a plugin by name (bundled or configured).
    pub async fn load_named(&self, name: &str) -> Result<Plugin, PluginError> {
        let source = self
            .sources()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
            .ok_or_else(|| {
                let names: Vec<&str> = bundled::BUNDLED.iter().map(|b| b.name).collect();
                PluginError::Unknown(name.to_string(), names.join(", "))
            })?;
        self.load_source(&source).await
    }

    pub async fn load_source(&self, source: &Source) -> Result<Plugin, PluginError> {
        match source {
            Source::Bundled(name) => {
                let b = bundled::find(name)
                    .ok_or_else(|| PluginError::Unknown(name.to_string(), String::new()))?;
                self.load_bytes(b.wasm, source).await
            }
            Source::File(path) => self.load_file(path).await,
        }
    }

    /// Loads a `.wasm` file (and its `.minisig`, if any); its settings are
    /// those of the name it reports.
    pub async fn load_file(&self, path: &Path) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|error| PluginError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let sig = crate::signature::read_sig(std::fs::File::open(crate::signature::sig_path(path)));
        self.load_file_bytes(&bytes, sig.as_deref(), path).await
    }

    /// Loads a `.wasm` file's bytes and signature, read by the caller (the
    /// service reads `plugins_dir` through a capability handle).
    pub async fn load_file_bytes(
        &self,
        bytes: &[u8],
        sig: Option<&str>,
        path: &Path,
    ) -> Result<Plugin, PluginError> {
        let source = Source::File(path.to_path_buf());
        let refuse = |error| PluginError::Signature {
            origin: source.to_string(),
            error,
        };
        // Before compiling: bytes nobody trusted never reach the compiler
        // (including an unsigned file at the path of a plugin with keys).
        if let (None, Some(name)) = (sig, self.keyed_plugin_at(path)) {
            return Err(refuse(self.missing_for(path, name)));
        }
        let signed = self.signature(bytes, sig, path, None).map_err(refuse)?;
        let mut plugin = self.load_bytes(bytes, &source).await?;
        // The key must be trusted for the name the plugin reports.
        if let crate::signature::Signed::By(_) = &signed {
            plugin.signed = self
                .signature(bytes, sig, path, Some(plugin.name()))
                .map_err(refuse)?;
            plugin.signed_at = sig.and_then(crate::signature::signed_at);
        } else if self.has_own_keys(plugin.name()) {
            // Deleting the `.minisig` must not unpin a plugin.
            return Err(refuse(self.missing_for(path, plugin.name())));
        } else {
            plugin.signed = signed;
        }
        Ok(plugin)
    }

    fn has_own_keys(&self, name: &str) -> bool {
        self.config
            .plugins
            .get(name)
            .is_some_and(|pc| !pc.trusted_keys.is_empty())
    }

    /// The configured plugin with its own keys whose `path` is this file.
    fn keyed_plugin_at(&self, path: &Path) -> Option<&str> {
        let real = path.canonicalize().ok();
        let same = |p: &Path| p == path || (real.is_some() && p.canonicalize().ok() == real);
        self.config
            .plugins
            .iter()
            .find(|(_, pc)| !pc.trusted_keys.is_empty() && pc.path.as_deref().is_some_and(same))
            .map(|(n, _)| n.as_str())
    }

    fn missing_for(&self, path: &Path, name: &str) -> crate::signature::SignatureError {
        let sig_name = crate::signature::sig_path(path)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        crate::signature::SignatureError::MissingForPlugin(sig_name, name.to_string())
    }

    /// Checks a file's signature: with `name`, against the keys trusted for
    /// that plugin; without, against every trusted key (before the name is
    /// known).
    fn signature(
        &self,
        bytes: &[u8],
        sig: Option<&str>,
        path: &Path,
        name: Option<&str>,
    ) -> Result<crate::signature::Signed, crate::signature::SignatureError> {
        let server = &self.config.server;
        let plugin_keys = self
            .config
            .plugins
            .iter()
            .filter(|(n, _)| name.is_none_or(|name| name == n.as_str()))
            .flat_map(|(_, pc)| &pc.trusted_keys);
        let keys: Vec<_> = server.trusted_keys.iter().chain(plugin_keys).collect();
        let sig_name = crate::signature::sig_path(path)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let checked =
            crate::signature::check(bytes, sig, &sig_name, &keys, server.require_signature);
        match (checked, name) {
            (Err(crate::signature::SignatureError::Invalid(_)), Some(name)) => {
                // It verified against some key before: one of another plugin.
                let all: Vec<_> = server
                    .trusted_keys
                    .iter()
                    .chain(self.config.plugins.values().flat_map(|pc| &pc.trusted_keys))
                    .collect();
                let by = crate::signature::check(bytes, sig, &sig_name, &all, false)
                    .ok()
                    .and_then(|s| match s {
                        crate::signature::Signed::By(k) => Some(k),
                        _ => None,
                    })
                    .unwrap_or_default();
                Err(crate::signature::SignatureError::NotForPlugin(
                    sig_name,
                    by,
                    name.to_string(),
                ))
            }
            (r, _) => r,
        }
    }

    async fn load_bytes(&self, bytes: &[u8], source: &Source) -> Result<Plugin, PluginError> {
        let plugin = self
            .runtime
            .load(bytes, self.cache.as_ref(), |name| {
                self.settings_for(name, matches!(source, Source::Bundled(_)))
            })
            .await
            .map_err(|error| PluginError::Load {
                origin: source.to_string(),
                error,
            })?;
        // A configured file serves under its section's name, or not at all:
        // otherwise `[plugins.a] path = …` could load as `b`, with b's grants.
        if let Source::File(path) = source {
            let configured = self
                .config
                .plugins
                .iter()
                .find(|(_, pc)| pc.path.as_deref() == Some(path.as_path()))
                .map(|(n, _)| n.clone());
            if let Some(configured) = configured.filter(|c| c != plugin.name()) {
                return Err(PluginError::Misnamed {
                    origin: source.to_string(),
                    reported: plugin.name().to_string(),
                    configured,
                });
            }
        }
        if let Some(pin) = &plugin.settings.pin {
            if !pin.matches(&plugin.digest) {
                return Err(PluginError::Pin {
                    origin: source.to_string(),
                    name: plugin.name().to_string(),
                    digest: plugin.digest.clone(),
                });
            }
        }
        Ok(plugin)
    }
}
