//! PromQL helpers: most runbooks want one number out of a query.

use crate::{metrics, Error};

/// The value of a query that yields one series or a scalar; `None` when
/// there is no data yet (empty vector or NaN, e.g. a ratio of zero rates).
pub fn scalar(promql: &str) -> Result<Option<f64>, Error> {
    Ok(metrics::query(promql)?
        .first()
        .map(|s| s.value)
        .filter(|v| v.is_finite()))
}

/// Each series' value keyed by the value of `label`.
pub fn by_label(promql: &str, label: &str) -> Result<Vec<(String, f64)>, Error> {
    Ok(metrics::query(promql)?
        .into_iter()
        .filter(|s| s.value.is_finite())
        .map(|s| {
            let key = s
                .labels
                .iter()
                .find(|(k, _)| k == label)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            (key, s.value)
        })
        .collect())
}

/// A PromQL range like `5m` from config, checked so that a typo is an
/// `invalid` error naming the key rather than a query error later.
pub fn window(value: &str, key: &str) -> Result<String, Error> {
    let v = value.trim();
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    if num.is_empty() || !matches!(unit, "ms" | "s" | "m" | "h" | "d") {
        return Err(Error::Invalid(format!(
            "config key `{key}`: `{v}` is not a PromQL range like 30s, 5m or 1h"
        )));
    }
    Ok(v.to_string())
}

/// A PromQL range from config (`5m`), checked by [`window`]; a
/// [`settings!`](crate::settings) type. Reads and prints as its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window(String);

impl core::ops::Deref for Window {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl core::fmt::Display for Window {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl crate::Setting for Window {
    type Default = &'static str;
    fn read(cfg: &crate::Config<'_>, key: &str, default: &'static str) -> Result<Self, Error> {
        window(&cfg.string(key, default), key).map(Window)
    }
}
