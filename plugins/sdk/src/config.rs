//! Typed lookups over the `config` key/value list of a run's context.

/// Borrowed view of a run's configuration.
pub struct Config<'a> {
    pairs: &'a [(String, String)],
}

impl<'a> Config<'a> {
    pub fn new(pairs: &'a [(String, String)]) -> Self {
        Self { pairs }
    }

    /// The raw value of `key`, if set and not blank.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// A string with a default.
    pub fn string(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }

    /// A float; an unparsable value is an `invalid` error naming the key.
    pub fn f64(&self, key: &str, default: f64) -> Result<f64, crate::Error> {
        self.parsed(key, default)
    }

    /// An unsigned integer; an unparsable value is an `invalid` error naming the key.
    pub fn u64(&self, key: &str, default: u64) -> Result<u64, crate::Error> {
        self.parsed(key, default)
    }

    /// A comma-separated list; blank items are dropped.
    pub fn list(&self, key: &str, default: &[&str]) -> Vec<String> {
        match self.get(key) {
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            None => default.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn parsed<T: core::str::FromStr>(&self, key: &str, default: T) -> Result<T, crate::Error> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                crate::Error::Invalid(format!("config key `{key}`: cannot parse `{v}`"))
            }),
        }
    }
}
