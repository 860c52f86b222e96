//! The seed's escalation policy (P0–P3: response time, who is paged, which
//! channels) and its communication templates, with `remedy.toml` overrides
//! under `[escalation.pN]` and `[templates.NAME]`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The four priorities of the seed; config keys and labels may spell them
/// `p0` or `P0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub enum Priority {
    P0,
    P1,
    P2,
    P3,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Priority::P0, Priority::P1, Priority::P2, Priority::P3];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::P0 => "P0",
            Priority::P1 => "P1",
            Priority::P2 => "P2",
            Priority::P3 => "P3",
        }
    }

    /// `p0`/`P0` … `p3`.
    pub fn parse(s: &str) -> Option<Priority> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }
}

impl TryFrom<String> for Priority {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Priority::parse(&s).ok_or_else(|| format!("`{s}` is not a priority: p0, p1, p2 or p3"))
    }
}

/// One priority's route, as configured (every key optional).
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityConfig {
    /// Notify channel names (`[backends.notify.NAME]`) this priority goes to.
    pub channels: Option<Vec<String>>,
    /// How fast a human must respond (free text, e.g. `15 min`).
    pub respond_within: Option<String>,
    /// Who is escalated to.
    pub escalate_to: Option<String>,
}

/// A communication template; `{name}` placeholders are filled at render time.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The title; `{name}` placeholders allowed.
    pub title: String,
    /// The body; `{name}` placeholders allowed.
    pub body: String,
}

/// A priority's route after defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub priority: Priority,
    pub channels: Vec<String>,
    pub respond_within: String,
    pub escalate_to: String,
}

/// Routes per priority and templates by name.
#[derive(Debug, Clone)]
pub struct Policy {
    routes: BTreeMap<Priority, Route>,
    templates: BTreeMap<String, Template>,
}

/// Seed: "Critical: PagerDuty + Slack #alerts-critical; Warning: Slack
/// #alerts-warning; Info: Slack #alerts-info", with the response table.
fn seed_route(p: Priority) -> Route {
    let (channels, within, who): (&[&str], _, _) = match p {
        Priority::P0 => (
            &["pagerduty", "alerts-critical"],
            "15 min",
            "CTO, all hands",
        ),
        Priority::P1 => (&["alerts-critical"], "1 hour", "Engineering Lead"),
        Priority::P2 => (&["alerts-warning"], "4 hours", "On-call Engineer"),
        Priority::P3 => (&["alerts-info"], "24 hours", "Next business day"),
    };
    Route {
        priority: p,
        channels: channels.iter().map(|s| s.to_string()).collect(),
        respond_within: within.into(),
        escalate_to: who.into(),
    }
}

/// The seed's two templates. Its "~X%" became `{impact_percent}`; the
/// service and the issue are placeholders so other incidents can use them.
fn seed_templates() -> BTreeMap<String, Template> {
    let mut t = BTreeMap::new();
    t.insert(
        "status-page-p0".to_string(),
        Template {
            title: "🚨 Service Outage - {service}".into(),
            body: "We are investigating issues with {issue}. Some users may be unable to complete orders.\n\n\
                   Impact: ~{impact_percent}% of traffic affected\n\
                   Status: {status}\n\
                   Next Update: {next_update}\n\n\
                   Workaround: Cash-only mode available at venues"
                .into(),
        },
    );
    t.insert(
        "customer-p1".to_string(),
        Template {
            title: "⚠️ {service} Delay".into(),
            body: "We're experiencing temporary delays with {issue}.\n\n\
                   - Card payments may take longer than usual\n\
                   - Cash payments work normally\n\
                   - All pending transactions will be processed\n\n\
                   We're working to resolve this quickly. Thank you for your patience."
                .into(),
        },
    );
    t
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(&BTreeMap::new(), &BTreeMap::new())
    }
}

impl Policy {
    /// The seed's policy with `overrides` and extra or replaced templates.
    pub fn new(
        overrides: &BTreeMap<Priority, PriorityConfig>,
        templates: &BTreeMap<String, Template>,
    ) -> Policy {
        let mut routes = BTreeMap::new();
        for p in Priority::ALL {
            let mut r = seed_route(p);
            if let Some(o) = overrides.get(&p) {
                if let Some(c) = &o.channels {
                    r.channels = c.clone();
                }
                if let Some(w) = &o.respond_within {
                    r.respond_within = w.clone();
                }
                if let Some(e) = &o.escalate_to {
                    r.escalate_to = e.clone();
                }
            }
            routes.insert(p, r);
        }
        let mut all = seed_templates();
        all.extend(templates.iter().map(|(k, v)| (k.clone(), v.clone())));
        Policy {
            routes,
            templates: all,
        }
    }

    pub fn route(&self, p: Priority) -> &Route {
        // Every priority has a route: `new` fills all four.
        &self.routes[&p]
    }

    pub fn template_names(&self) -> impl Iterator<Item = &str> {
        self.templates.keys().map(String::as_str)
    }

    /// Fills `name` with `values`; the error names what is missing.
    pub fn render(&self, name: &str, values: &[(String, String)]) -> Result<Template, String> {
        let t = self.templates.get(name).ok_or_else(|| {
            format!(
                "no template `{name}` (known: {})",
                self.template_names().collect::<Vec<_>>().join(", ")
            )
        })?;
        Ok(Template {
            title: fill(&t.title, values).map_err(|p| format!("template `{name}`: {p}"))?,
            body: fill(&t.body, values).map_err(|p| format!("template `{name}`: {p}"))?,
        })
    }
}

/// Replaces `{name}` by its value; `{{` and `}}` are literal braces. Every
/// placeholder must have a value: a half-filled customer message is worse
/// than an error the plugin can see.
fn fill(text: &str, values: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let c = rest.as_bytes()[i];
        rest = &rest[i + 1..];
        if rest.as_bytes().first() == Some(&c) {
            out.push(c as char);
            rest = &rest[1..];
            continue;
        }
        if c == b'}' {
            out.push('}');
            continue;
        }
        let Some(end) = rest.find('}') else {
            out.push('{');
            continue;
        };
        let name = &rest[..end];
        match values.iter().find(|(k, _)| k == name) {
            Some((_, v)) => out.push_str(v),
            None => {
                if !missing.contains(&name) {
                    missing.push(name);
                }
            }
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "no value for {}",
            missing
                .iter()
                .map(|m| format!("{{{m}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn seed_routes_and_overrides() {
        let p = Policy::default();
        assert_eq!(p.route(Priority::P0).respond_within, "15 min");
        assert_eq!(
            p.route(Priority::P0).channels,
            ["pagerduty", "alerts-critical"]
        );
        assert_eq!(p.route(Priority::P2).escalate_to, "On-call Engineer");
        let mut o = BTreeMap::new();
        o.insert(
            Priority::P1,
            PriorityConfig {
                channels: Some(vec!["lead".into()]),
                ..Default::default()
            },
        );
        let p = Policy::new(&o, &BTreeMap::new());
        assert_eq!(p.route(Priority::P1).channels, ["lead"]);
        assert_eq!(p.route(Priority::P1).respond_within, "1 hour");
    }

    #[test]
    fn status_page_template_fills_every_placeholder() {
        let p = Policy::default();
        let t = p
            .render(
                "status-page-p0",
                &v(&[
                    ("service", "Payment Processing"),
                    ("issue", "payment processing"),
                    ("impact_percent", "37"),
                    ("status", "Investigating"),
                    ("next_update", "15 minutes"),
                ]),
            )
            .unwrap();
        assert_eq!(t.title, "🚨 Service Outage - Payment Processing");
        assert!(
            t.body.contains("Impact: ~37% of traffic affected"),
            "{}",
            t.body
        );
        assert!(t.body.contains("Next Update: 15 minutes"));
        assert!(!t.body.contains('{'));
    }

    #[test]
    fn missing_placeholders_and_unknown_templates_are_named() {
        let p = Policy::default();
        let e = p
            .render("status-page-p0", &v(&[("service", "x")]))
            .unwrap_err();
        assert!(
            e.contains("{impact_percent}") && e.contains("{issue}"),
            "{e}"
        );
        let e = p.render("nope", &[]).unwrap_err();
        assert!(e.contains("customer-p1"), "{e}");
    }

    #[test]
    fn braces_escape_and_strays_survive() {
        assert_eq!(fill("a {{x}} b }", &[]).unwrap(), "a {x} b }");
        assert_eq!(fill("{a}{a}", &v(&[("a", "1")])).unwrap(), "11");
        assert_eq!(fill("open { only", &[]).unwrap(), "open { only");
    }
}
