//! Alert-aware acting, as configured: which alerts hold automation off
//! (`block_while_firing`, per plugin and under `[server]`), as selectors
//! Alertmanager's API understands.

/// One label matcher of a selector: `name="value"`, `!=`, `=~`, `!~`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub name: String,
    pub value: String,
    pub regex: bool,
    pub equal: bool,
}

impl Matcher {
    pub fn eq(name: &str, value: &str) -> Matcher {
        Matcher {
            name: name.into(),
            value: value.into(),
            regex: false,
            equal: true,
        }
    }

    /// As Alertmanager's `filter` parameter spells it.
    pub fn filter(&self) -> String {
        let op = match (self.equal, self.regex) {
            (true, false) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (false, true) => "!~",
        };
        format!("{}{op}{:?}", self.name, self.value)
    }
}

/// Alerts to look for: a bare alert name (`MaintenanceWindow`) or a label
/// selector (`{alertname="DeployInProgress", team="payments"}`), as a
/// config writes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String")]
#[schemars(
    with = "String",
    example = &"MaintenanceWindow",
    example = &r#"{alertname="DeployInProgress", team="payments"}"#
)]
pub struct Selector {
    pub text: String,
    pub matchers: Vec<Matcher>,
}

impl TryFrom<String> for Selector {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let t = text.trim();
        let matchers = match t.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            Some(inner) => parse_matchers(inner)
                .map_err(|e| format!("`{text}`: {e}"))?,
            None if !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') => {
                vec![Matcher::eq("alertname", t)]
            }
            None => {
                return Err(format!(
                    "`{text}` is neither an alert name nor a selector like {{alertname=\"X\", team=\"y\"}}"
                ))
            }
        };
        if matchers.is_empty() {
            return Err(format!(
                "`{text}` matches every alert: name at least one label"
            ));
        }
        Ok(Selector {
            text: t.to_string(),
            matchers,
        })
    }
}

/// `a="b", c=~"d.*"`: label names, operators and double-quoted values.
fn parse_matchers(inner: &str) -> Result<Vec<Matcher>, String> {
    let mut out = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("a matcher needs an operator and a quoted value")?;
        let name = &rest[..name_end];
        if name.is_empty() {
            return Err("a matcher needs a label name".into());
        }
        let after = rest[name_end..].trim_start();
        let (op, after) = ["=~", "!~", "!=", "="]
            .iter()
            .find_map(|op| after.strip_prefix(op).map(|a| (*op, a)))
            .ok_or_else(|| format!("`{name}`: no operator (=, !=, =~, !~)"))?;
        let after = after.trim_start();
        let body = after
            .strip_prefix('"')
            .ok_or_else(|| format!("`{name}`: the value must be double-quoted"))?;
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("`{name}`: unterminated value"))?;
        out.push(Matcher {
            name: name.to_string(),
            value,
            regex: op.contains('~'),
            equal: !op.starts_with('!'),
        });
        rest = body[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Result<Selector, String> {
        Selector::try_from(s.to_string())
    }

    #[test]
    fn names_and_selectors_become_matchers_and_nonsense_is_named() {
        let s = sel("MaintenanceWindow").unwrap();
        assert_eq!(
            s.matchers,
            vec![Matcher::eq("alertname", "MaintenanceWindow")]
        );
        assert_eq!(s.matchers[0].filter(), "alertname=\"MaintenanceWindow\"");
        let s = sel(r#"{alertname=~"Deploy.*", team!="qa", note="a \"quoted\", comma"}"#).unwrap();
        let filters: Vec<String> = s.matchers.iter().map(Matcher::filter).collect();
        assert_eq!(
            filters,
            [
                "alertname=~\"Deploy.*\"",
                "team!=\"qa\"",
                "note=\"a \\\"quoted\\\", comma\""
            ]
        );
        for bad in [
            "",
            "{}",
            "two words",
            "{team=qa}",
            "{team=\"qa}",
            "{=\"x\"}",
            "{team \"x\"}",
        ] {
            let e = sel(bad).unwrap_err();
            assert!(
                e.contains(&format!("`{bad}`")) || bad.is_empty(),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn blocking_alerts_need_an_alertmanager_and_the_error_names_the_key() {
        let text = "[plugins.x]\nblock_while_firing = [\"MaintenanceWindow\"]\n";
        let cfg = crate::config::Config::parse(text, std::path::Path::new("r.toml")).unwrap();
        let e = cfg.check_alerting().unwrap_err().to_string();
        assert!(
            e.contains("plugins.x.block_while_firing") && e.contains("alertmanager_url"),
            "{e}"
        );
        let with = format!("[backends]\nalertmanager_url = \"http://127.0.0.1:9093\"\n{text}");
        let cfg = crate::config::Config::parse(&with, std::path::Path::new("r.toml")).unwrap();
        cfg.check_alerting().unwrap();
    }
}
