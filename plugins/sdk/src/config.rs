//! Typed lookups over the `config` key/value list of a run's context, and
//! [`settings!`](crate::settings) for declaring a plugin's keys.

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

/// A type a config key can be read as in [`settings!`](crate::settings).
pub trait Setting: Sized {
    /// How the default is written.
    type Default;
    /// The value of `key`, or `default` when it is unset or blank.
    fn read(cfg: &Config<'_>, key: &str, default: Self::Default) -> Result<Self, crate::Error>;
}

impl Setting for String {
    type Default = &'static str;
    fn read(cfg: &Config<'_>, key: &str, default: &'static str) -> Result<Self, crate::Error> {
        Ok(cfg.string(key, default))
    }
}

impl Setting for f64 {
    type Default = f64;
    fn read(cfg: &Config<'_>, key: &str, default: f64) -> Result<Self, crate::Error> {
        cfg.f64(key, default)
    }
}

impl Setting for u64 {
    type Default = u64;
    fn read(cfg: &Config<'_>, key: &str, default: u64) -> Result<Self, crate::Error> {
        cfg.u64(key, default)
    }
}

/// A switch: only the value `true` turns it on, any other value turns it off.
impl Setting for bool {
    type Default = bool;
    fn read(cfg: &Config<'_>, key: &str, default: bool) -> Result<Self, crate::Error> {
        Ok(cfg.get(key).map_or(default, |v| v == "true"))
    }
}

/// A comma-separated list, as [`Config::list`].
impl Setting for Vec<String> {
    type Default = &'static [&'static str];
    fn read(
        cfg: &Config<'_>,
        key: &str,
        default: &'static [&'static str],
    ) -> Result<Self, crate::Error> {
        Ok(cfg.list(key, default))
    }
}

/// Declares a plugin's settings: one field per config key, named as the
/// key, with its type and default. The declaration is the documentation of
/// the keys (each field's docs gain its key and default), and
/// `Settings::from(&ctx)` reads them all; a value that does not parse is an
/// `invalid` error naming its key.
///
/// Types: `String` (default `"text"`), `f64`, `u64`, `bool` (only `true` is
/// on), `Vec<String>` (comma-separated, default `&["a", "b"]`) and
/// [`query::Window`](crate::query::Window) (a PromQL range, default `"5m"`).
///
/// ```ignore
/// settings! {
///     struct Settings {
///         /// PromQL range of the error ratio.
///         window: query::Window = "5m",
///         /// Above this the runbook acts.
///         max_error_ratio: f64 = 0.05,
///         /// `application_name`s never touched.
///         protected_applications: Vec<String> = &["pg_dump"],
///     }
/// }
/// ```
#[macro_export]
macro_rules! settings {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$doc:meta])*
                $key:ident : $ty:ty = $default:expr
            ),* $(,)?
        }
    ) => {
        $(#[$attr])*
        $vis struct $name {
            $(
                $(#[$doc])*
                #[doc = ::core::concat!(
                    "\n\nConfig key `", ::core::stringify!($key),
                    "`, default `", ::core::stringify!($default), "`."
                )]
                $vis $key: $ty,
            )*
        }

        impl $name {
            /// Reads every key from the run's config; an unset or blank key
            /// takes its default.
            $vis fn from(
                ctx: &$crate::Context,
            ) -> ::core::result::Result<Self, $crate::Error> {
                let cfg = ctx.cfg();
                ::core::result::Result::Ok(Self {
                    $(
                        $key: <$ty as $crate::Setting>::read(
                            &cfg,
                            ::core::stringify!($key),
                            $default,
                        )?,
                    )*
                })
            }
        }
    };
}
