//! Which alerts reach a plugin: the names it describes (or its config's
//! `alerts`), the labels they must carry, and the labels that name an
//! alert's target for single flight.

use std::collections::BTreeMap;

/// Which alerts a plugin takes, and what single flight keys them by.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    /// Alert names routed to the plugin (`None`: what it describes).
    pub alerts: Option<Vec<String>>,
    /// Labels a routed alert must carry, with these values.
    pub match_labels: BTreeMap<String, String>,
    /// Labels naming an alert's target for single flight.
    pub target_labels: Vec<String>,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            alerts: None,
            match_labels: BTreeMap::new(),
            target_labels: ["alertname", "service", "instance"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl Routing {
    /// Does an alert of this name and labels go to a plugin that describes
    /// itself as taking `described`?
    pub fn takes(
        &self,
        described: &[String],
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        let names = self.alerts.as_deref().unwrap_or(described);
        names.iter().any(|n| n == name)
            && self
                .match_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
    }
}
