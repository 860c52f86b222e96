//! A plugin's settings, resolved once: the bundled defaults (grants and
//! scope, for the bundled plugin itself only), then its `[plugins.NAME]`
//! section, then command-line overrides.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::bundled::Bundled;
use crate::config::{strings, PluginConfig};
use crate::grants::{Capability, Grants};
use crate::guardrails::Limits;
use crate::runtime::{PluginSettings, Routing};

/// Per-invocation overrides from the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Extra grants: a capability and, optionally, scope patterns for it.
    pub grants: Vec<(Capability, Vec<String>)>,
    pub timeout_ms: Option<u64>,
    pub memory_mb: Option<u64>,
}

/// The settings of a plugin: `bundled` is its bundled entry when it is the
/// bundled plugin itself (never for a file that merely reports the name).
pub fn resolve(
    bundled: Option<&Bundled>,
    pc: Option<&PluginConfig>,
    overrides: &Overrides,
) -> PluginSettings {
    let empty = PluginConfig::default();
    let pc = pc.unwrap_or(&empty);
    let mut caps: BTreeSet<Capability> = match (&pc.grants, bundled) {
        (Some(g), _) => g.iter().copied().collect(),
        (None, Some(b)) => b.grants.iter().copied().collect(),
        (None, None) => BTreeSet::new(),
    };
    // Only the config file can allow a flush: no bundled default does.
    let mut scope = bundled
        .map(|b| (b.scope)())
        .unwrap_or_default()
        .overlay(&pc.scope);
    for (cap, targets) in &overrides.grants {
        caps.insert(*cap);
        // A bad pattern from the command line is dropped with a warning
        // rather than widening access.
        if let Err(e) = scope.widen(*cap, targets) {
            tracing::warn!("--grant {}: {e}", cap.as_str());
        }
    }
    let defaults = PluginSettings::default();
    let ms = |v: Option<u64>| v.map(Duration::from_millis);
    let d = Limits::default();
    PluginSettings {
        grants: Arc::new(Grants {
            capabilities: caps,
            scope,
        }),
        config: strings(&pc.config),
        mode: pc.mode.unwrap_or_default(),
        detect_timeout: ms(overrides.timeout_ms)
            .or(pc.timeout_ms.map(|t| t.get()))
            .unwrap_or(defaults.detect_timeout),
        mitigate_timeout: ms(overrides.timeout_ms)
            .or(pc.mitigate_timeout_ms.map(|t| t.get()))
            .unwrap_or(defaults.mitigate_timeout),
        memory_bytes: overrides
            .memory_mb
            .or(pc.memory_mb.map(|m| m.0))
            .map(|mb| (mb as usize) << 20)
            .unwrap_or(defaults.memory_bytes)
            .min(crate::runtime::engine::MAX_MEMORY_BYTES),
        limits: Arc::new(Limits {
            budgets: pc.budgets.iter().map(|(k, b)| (*k, b.0)).collect(),
            cooldown: pc.cooldown.map_or(d.cooldown, |s| s.get()),
            approval_ttl: pc.approval_ttl.map_or(d.approval_ttl, |s| s.get()),
            verify_after: pc.verify_after.map_or(d.verify_after, |s| s.get()),
            retry_after: pc.retry_after.map_or(d.retry_after, |s| s.get()),
            approvals_required: pc
                .approvals_required
                .map_or(d.approvals_required, |n| n.get()),
            act_only_while_firing: pc.act_only_while_firing.unwrap_or(d.act_only_while_firing),
            act_if_alertmanager_down: pc
                .act_if_alertmanager_down
                .unwrap_or(d.act_if_alertmanager_down),
            block_while_firing: pc.block_while_firing.clone().unwrap_or_default(),
            ladder: pc.ladder.clone(),
            flap: pc.flap.map(|f| crate::guardrails::Flap {
                max: f.max.get(),
                per: f.per.get(),
            }),
            silence_lease: pc.silence_while_acting.unwrap_or(false).then(|| {
                pc.silence_lease
                    .map_or(Duration::from_secs(120), |s| s.get())
                    .max(Duration::from_secs(1))
            }),
        }),
        priority: pc.priority.unwrap_or(defaults.priority),
        files: pc.files.clone(),
        routing: Arc::new(Routing {
            alerts: pc.alerts.clone(),
            match_labels: pc.match_labels.clone(),
            target_labels: pc
                .target_labels
                .clone()
                .unwrap_or_else(|| Routing::default().target_labels),
        }),
        schedules: Arc::new(pc.schedules.clone()),
        pin: pc.sha256.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::action::ActionKind;
    use crate::config::Config;

    fn section(toml: &str) -> PluginConfig {
        let cfg = Config::parse(toml, Path::new("remedy.toml")).unwrap();
        cfg.plugins.into_values().next().unwrap_or_default()
    }

    fn bundled(name: &str) -> &'static Bundled {
        crate::bundled::find(name).unwrap()
    }

    #[test]
    fn bundled_defaults_apply_only_to_the_bundled_plugin() {
        let b = bundled("circuit-breaker-open");
        let s = resolve(Some(b), None, &Overrides::default());
        assert!(s.grants.has(Capability::Breaker));
        assert_eq!(
            s.grants.scope.breakers.as_deref().unwrap(),
            ["stripe", "supabase", "openai"]
        );
        // A file reporting the same name gets nothing of it.
        let s = resolve(None, None, &Overrides::default());
        assert!(!s.grants.has(Capability::Breaker));
        assert_eq!(s.grants.scope.breakers, None);
    }

    #[test]
    fn the_config_section_replaces_field_by_field() {
        let b = bundled("circuit-breaker-open");
        let pc = section(
            "[plugins.circuit-breaker-open]\nmode = \"auto\"\ntimeout_ms = 700\n\
             [plugins.circuit-breaker-open.scope]\nbreakers = [\"stripe\"]\ncache_flush = true\n",
        );
        let s = resolve(Some(b), Some(&pc), &Overrides::default());
        assert_eq!(s.grants.scope.breakers.as_deref().unwrap(), ["stripe"]);
        // Fields the section leaves out keep the bundled value.
        assert_eq!(s.grants.scope.probe.as_ref().map(Vec::len), Some(3));
        assert_eq!(s.grants.scope.cache_flush, Some(true));
        assert!(s.grants.has(Capability::Probe), "grants stay bundled");
        assert_eq!(s.mode, crate::config::Mode::Auto);
        assert_eq!(s.detect_timeout, Duration::from_millis(700));
        assert_eq!(s.mitigate_timeout, Duration::from_millis(10_000));
        // `grants` in the section replaces the bundled list.
        let pc = section("[plugins.circuit-breaker-open]\ngrants = [\"log\"]\n");
        let s = resolve(Some(b), Some(&pc), &Overrides::default());
        assert!(!s.grants.has(Capability::Breaker));
        // A bundled default never allows a flush.
        assert_eq!(
            resolve(Some(b), None, &Overrides::default())
                .grants
                .scope
                .cache_flush,
            None
        );
    }

    #[test]
    fn overrides_come_last_and_bad_patterns_do_not_widen() {
        let pc = section("[plugins.x]\ntimeout_ms = 700\nmemory_mb = 64\n");
        let o = Overrides {
            grants: vec![
                (Capability::Breaker, vec!["a-*".into()]),
                (Capability::Probe, vec!["not a url".into()]),
                (Capability::Probe, vec!["http://127.0.0.1:*".into()]),
            ],
            timeout_ms: Some(50),
            memory_mb: Some(100_000),
        };
        let s = resolve(None, Some(&pc), &o);
        assert!(s.grants.has(Capability::Breaker) && s.grants.has(Capability::Probe));
        assert_eq!(s.grants.scope.breakers.as_deref().unwrap(), ["a-*"]);
        assert_eq!(s.grants.scope.probe.as_ref().unwrap().len(), 1);
        assert_eq!(s.detect_timeout, Duration::from_millis(50));
        assert_eq!(s.mitigate_timeout, Duration::from_millis(50));
        assert_eq!(s.memory_bytes, crate::runtime::engine::MAX_MEMORY_BYTES);
    }

    #[test]
    fn limits_routing_and_schedules_are_resolved_typed() {
        let pc = section(
            "[plugins.x]\ncooldown = \"0s\"\nverify_after = \"2m\"\npriority = \"P0\"\n\
             alerts = [\"A\"]\nmatch_labels = { env = \"prod\" }\ntarget_labels = [\"db\"]\n\
             budgets = { \"database.terminate\" = { max = 2, per = \"10m\" } }\n\
             [[plugins.x.schedules]]\nname = \"s\"\nevery = \"5m\"\nparams = { n = 3 }\n",
        );
        let s = resolve(None, Some(&pc), &Overrides::default());
        assert_eq!(s.limits.cooldown, Duration::ZERO);
        assert_eq!(s.limits.cooldown_for(ActionKind::DatabaseTerminate), None);
        assert_eq!(s.limits.verify_after, Duration::from_secs(120));
        assert_eq!(s.limits.budget(ActionKind::DatabaseTerminate).max, 2);
        assert_eq!(s.limits.budget(ActionKind::DatabaseCancel).max, 10);
        assert_eq!(s.priority, crate::escalation::Priority::P0);
        let labels = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(s.routing.takes(&[], "A", &labels(&[("env", "prod")])));
        assert!(!s.routing.takes(&[], "A", &labels(&[("env", "dev")])));
        assert!(!s
            .routing
            .takes(&["B".into()], "B", &labels(&[("env", "prod")])));
        assert_eq!(s.routing.target_labels, ["db"]);
        assert_eq!(s.schedules[0].params["n"], "3");
    }
}
