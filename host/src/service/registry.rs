//! The plugins a running service serves. Entries are swapped atomically:
//! a run holds the `Arc<Plugin>` it started with, so a replaced plugin's
//! runs in flight finish on the old version.

use crate::locks::RwLockExt;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::runtime::{Plugin, PluginSettings};

#[derive(Clone)]
pub struct Entry {
    pub source: String,
    pub plugin: Option<Arc<Plugin>>,
    /// The last load error; the previous version (if any) keeps serving.
    pub error: Option<String>,
}

/// A plugin as `GET /v1/plugins` and `remedy plugins` show it.
#[derive(Serialize, schemars::JsonSchema)]
pub struct EntryView {
    pub name: String,
    pub source: String,
    pub status: &'static str,
    pub version: Option<String>,
    pub description: Option<String>,
    pub digest: Option<String>,
    pub alerts: Vec<String>,
    pub grants: Vec<String>,
    pub mode: Option<String>,
    pub error: Option<String>,
    /// The trusted minisign key that signed the loaded file, if any.
    pub signed_by: Option<String>,
}

impl EntryView {
    /// The row of `name` from `source`: what loaded (if anything), the
    /// settings it runs under (the loaded plugin's, else `settings`), and
    /// the last load error.
    pub fn of(
        name: &str,
        source: String,
        plugin: Option<&Plugin>,
        settings: Option<&PluginSettings>,
        error: Option<String>,
    ) -> EntryView {
        let settings = plugin.map(|p| &p.settings).or(settings);
        EntryView {
            name: name.to_string(),
            source,
            status: match (plugin, &error) {
                (Some(_), None) => "loaded",
                (Some(_), Some(_)) => "loaded_with_error",
                (None, _) => "error",
            },
            version: plugin.map(|p| p.info.version.clone()),
            description: plugin.map(|p| p.info.description.clone()),
            digest: plugin.map(|p| p.digest.clone()),
            signed_by: plugin.and_then(|p| match &p.signed {
                crate::signature::Signed::By(k) => Some(k.clone()),
                _ => None,
            }),
            alerts: plugin.map(|p| p.info.alerts.clone()).unwrap_or_default(),
            grants: settings
                .map(|s| {
                    s.grants
                        .capabilities
                        .iter()
                        .map(|c| c.as_str().to_string())
                        .collect()
                })
                .unwrap_or_default(),
            mode: settings.map(|s| s.mode.as_str().to_string()),
            error,
        }
    }
}

#[derive(Default)]
pub struct Registry {
    entries: RwLock<BTreeMap<String, Entry>>,
}

impl Registry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.entries.read_locked()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries.write_locked()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.read().get(name).and_then(|e| e.plugin.clone())
    }

    /// Where the plugin serving as `name` came from, if one does.
    pub fn source_of(&self, name: &str) -> Option<String> {
        self.read()
            .get(name)
            .filter(|e| e.plugin.is_some())
            .map(|e| e.source.clone())
    }

    pub fn loaded(&self) -> Vec<Arc<Plugin>> {
        self.read()
            .values()
            .filter_map(|e| e.plugin.clone())
            .collect()
    }

    pub fn set_loaded(&self, source: String, plugin: Plugin) {
        let name = plugin.name().to_string();
        self.write().insert(
            name,
            Entry {
                source,
                plugin: Some(Arc::new(plugin)),
                error: None,
            },
        );
    }

    /// Records a failed load under `key`, keeping what was loaded before.
    pub fn set_error(&self, key: &str, source: String, error: String) {
        let mut entries = self.write();
        let e = entries.entry(key.to_string()).or_insert(Entry {
            source: source.clone(),
            plugin: None,
            error: None,
        });
        e.source = source;
        e.error = Some(error);
    }

    pub fn remove(&self, key: &str) {
        self.write().remove(key);
    }

    pub fn views(&self) -> Vec<EntryView> {
        self.read()
            .iter()
            .map(|(name, e)| {
                EntryView::of(
                    name,
                    e.source.clone(),
                    e.plugin.as_deref(),
                    None,
                    e.error.clone(),
                )
            })
            .collect()
    }
}
