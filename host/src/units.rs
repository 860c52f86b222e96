//! Units of configuration: durations (`500ms`, `30s`, `5m`, `1h`, `7d`)
//! and schedule specs (an interval or a cron expression), parsed once when
//! the config is read.

use std::str::FromStr;
use std::time::Duration;

/// The longest configurable duration (budget window, cooldown, approval
/// TTL, retention): a year. Longer is a typo, and would overflow the time
/// arithmetic downstream.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// `0` (off), or a number and a unit (`ms`, `s`, `m`, `h`, `d`), at most
/// [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: expected a number and a unit (500ms, 30s, 5m, 1h, 7d)"))?;
    let too_long = || format!("`{s}`: too long");
    let scaled = |k: u64| {
        n.checked_mul(k)
            .map(Duration::from_secs)
            .ok_or_else(too_long)
    };
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => scaled(60)?,
        "h" => scaled(3600)?,
        "d" => scaled(86_400)?,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h, d)")),
    };
    if d > MAX_DURATION {
        return Err(format!("`{s}` is longer than a year (8784h)"));
    }
    Ok(d)
}

/// A duration: a number and a unit, `ms`, `s`, `m`, `h` or `d` (at most a
/// year); `0s` turns a guardrail off.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(try_from = "String")]
#[schemars(rename = "Duration", example = &"30s", example = &"5m")]
pub struct Span(Duration);

impl Span {
    pub const fn from_secs(s: u64) -> Span {
        Span(Duration::from_secs(s))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl TryFrom<String> for Span {
    type Error = String;
    fn try_from(s: String) -> Result<Span, String> {
        parse_duration(&s).map(Span)
    }
}

/// The longest timeout any `*_ms` key takes: ten minutes.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// A configured timeout in milliseconds (`timeout_ms = 2000`): 1 ms to
/// ten minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(try_from = "u64")]
#[schemars(extend("minimum" = 1, "maximum" = 600_000), example = 2000)]
pub struct TimeoutMs(Duration);

impl TimeoutMs {
    pub fn get(self) -> Duration {
        self.0
    }
}

impl TryFrom<u64> for TimeoutMs {
    type Error = String;
    fn try_from(ms: u64) -> Result<Self, String> {
        if (1..=MAX_TIMEOUT_MS).contains(&ms) {
            Ok(TimeoutMs(Duration::from_millis(ms)))
        } else {
            Err(format!(
                "{ms} ms: must be between 1 and {MAX_TIMEOUT_MS} (at most 10 minutes)"
            ))
        }
    }
}

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum Every {
    Interval(Duration),
    Cron(Box<cron::Schedule>),
}

/// The shortest schedule interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

impl Every {
    /// Exactly one of a cron expression (5 or 6 fields, seconds optional)
    /// and an interval (`every`).
    pub fn parse(cron: Option<&str>, every: Option<&str>) -> Result<Every, String> {
        match (cron, every) {
            (Some(_), Some(_)) | (None, None) => {
                Err("give exactly one of `cron` and `every`".into())
            }
            (None, Some(e)) => {
                let d = parse_duration(e)?;
                if d < MIN_INTERVAL {
                    return Err(format!("`{e}`: the shortest interval is 100ms"));
                }
                Ok(Every::Interval(d))
            }
            (Some(c), None) => {
                // The cron crate wants seconds first; standard 5-field
                // expressions fire at second 0.
                let expr = if c.split_whitespace().count() == 5 {
                    format!("0 {c}")
                } else {
                    c.to_string()
                };
                cron::Schedule::from_str(&expr)
                    .map(|s| Every::Cron(Box::new(s)))
                    .map_err(|e| format!("cron `{c}`: {e}"))
            }
        }
    }

    /// Where in its interval a schedule ticks, from its name (`key`): the
    /// same on every replica and after every restart, and different for
    /// different schedules, so that a thousand schedules of one interval do
    /// not all start in the same millisecond. Cron schedules tick when
    /// their expression says.
    pub fn phase(&self, key: &str) -> Duration {
        match self {
            Every::Interval(d) => {
                // FNV-1a: stable across processes, builds and versions.
                let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
                });
                let step = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
                Duration::from_millis(hash % step)
            }
            Every::Cron(_) => Duration::ZERO,
        }
    }

    /// The first tick strictly after `after`. An interval ticks at the
    /// multiples of itself since the Unix epoch, shifted by `phase`, so
    /// every replica, and every restart, names a tick the same way.
    pub fn next_tick(
        &self,
        after: chrono::DateTime<chrono::Utc>,
        phase: Duration,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            Every::Interval(d) => {
                let step = i64::try_from(d.as_millis()).ok()?.max(1);
                let phase = i64::try_from(phase.as_millis()).ok()? % step;
                let ms = after.timestamp_millis().checked_sub(phase)?;
                let next = ms.div_euclid(step).checked_add(1)?.checked_mul(step)?;
                chrono::DateTime::from_timestamp_millis(next.checked_add(phase)?)
            }
            Every::Cron(s) => s.after(&after).next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("9000000h")
            .unwrap_err()
            .contains("longer than a year"));
        assert!(parse_duration("99999999999999999h")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn schedules() {
        assert!(
            matches!(Every::parse(None, Some("1s")), Ok(Every::Interval(d)) if d == Duration::from_secs(1))
        );
        assert!(matches!(
            Every::parse(Some("*/5 * * * *"), None),
            Ok(Every::Cron(_))
        ));
        assert!(matches!(
            Every::parse(Some("*/10 * * * * *"), None),
            Ok(Every::Cron(_))
        ));
        assert!(Every::parse(Some("nope"), None)
            .unwrap_err()
            .contains("cron"));
        assert!(Every::parse(None, None).is_err());
        assert!(Every::parse(Some("* * * * *"), Some("1s")).is_err());
        assert!(Every::parse(None, Some("10ms"))
            .unwrap_err()
            .contains("100ms"));
    }

    #[test]
    fn ticks_are_fixed_instants_so_replicas_name_them_alike() {
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let zero = Duration::ZERO;
        let ten = Every::parse(None, Some("10s")).unwrap();
        let next = |after: &str, phase| ten.next_tick(at(after), phase);
        assert_eq!(
            next("2026-01-01T00:00:03.5Z", zero),
            Some(at("2026-01-01T00:00:10Z"))
        );
        // Strictly after: a tick that just fired is not named again.
        assert_eq!(
            next("2026-01-01T00:00:10Z", zero),
            Some(at("2026-01-01T00:00:20Z"))
        );
        // Shifted by the phase, still every 10 s.
        let p = Duration::from_millis(2_500);
        assert_eq!(
            next("2026-01-01T00:00:03Z", p),
            Some(at("2026-01-01T00:00:12.5Z"))
        );
        assert_eq!(
            next("2026-01-01T00:00:02Z", p),
            Some(at("2026-01-01T00:00:02.5Z"))
        );
        let cron = Every::parse(Some("*/15 * * * * *"), None).unwrap();
        let t = cron.next_tick(at("2026-01-01T00:00:15Z"), zero);
        assert_eq!(t, Some(at("2026-01-01T00:00:30Z")));
        assert_eq!(cron.phase("anything"), zero);
    }

    #[test]
    fn schedules_of_one_interval_are_spread_over_it_the_same_way_everywhere() {
        let every = Every::parse(None, Some("12s")).unwrap();
        let phases: std::collections::BTreeSet<Duration> = (0..200)
            .map(|i| every.phase(&format!("hostile/s{i:04}")))
            .collect();
        assert!(phases.iter().all(|p| *p < Duration::from_secs(12)));
        // 200 names over 12,000 ms: nearly all distinct.
        assert!(phases.len() > 190, "{}", phases.len());
        // A fixed value (FNV-1a of the name): changing the function renames
        // every tick of every running cluster.
        let one_second = Every::parse(None, Some("1s")).unwrap();
        assert_eq!(one_second.phase("db/sweep"), Duration::from_millis(540));
    }
}
