//! Runs per hour by status over the last day, as an inline SVG of stacked
//! bars: no script, no library, readable without the network.

use std::fmt::Write as _;

use chrono::{DateTime, Timelike, Utc};

use crate::store::HourCount;

/// The statuses the chart stacks, bottom up, and their colours; the rest
/// (running, queued, interrupted…) are stacked as `other`.
const SERIES: &[(&str, &str)] = &[
    ("succeeded", "#2e8540"),
    ("failed", "#c0392b"),
    ("pending_approval", "#d68910"),
    ("skipped", "#95a5a6"),
    ("other", "#2874a6"),
];

const HOURS: usize = 24;
const W: usize = 720;
const H: usize = 160;
const TOP: usize = 10;
const BOTTOM: usize = 22;

/// Counts per series of each of the last 24 hours (the last one is the
/// hour `now` is in).
pub fn buckets(counts: &[HourCount], now: DateTime<Utc>) -> Vec<[u64; 5]> {
    let this_hour = now
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now);
    let mut out = vec![[0u64; 5]; HOURS];
    for c in counts {
        let Ok(hour) = DateTime::parse_from_rfc3339(&format!("{}:00:00Z", c.hour)) else {
            continue;
        };
        let ago = (this_hour - hour.with_timezone(&Utc)).num_hours();
        if !(0..HOURS as i64).contains(&ago) {
            continue;
        }
        let i = SERIES
            .iter()
            .position(|(n, _)| *n == c.status)
            .unwrap_or(SERIES.len() - 1);
        out[HOURS - 1 - ago as usize][i] += c.runs;
    }
    out
}

/// The chart as an SVG element.
pub fn runs_per_hour(counts: &[HourCount], now: DateTime<Utc>) -> String {
    let b = buckets(counts, now);
    let max = b
        .iter()
        .map(|c| c.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let plot = H - TOP - BOTTOM;
    let slot = W / HOURS;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="runs per hour by status, last 24 hours" xmlns="http://www.w3.org/2000/svg">"#
    );
    let _ = write!(
        svg,
        r##"<text x="2" y="{}" class="axis">{max}</text><line x1="0" x2="{W}" y1="{TOP}" y2="{TOP}" stroke="#ddd"/>"##,
        TOP + 10
    );
    let first_hour = now.hour() as usize + 1;
    for (i, counts) in b.iter().enumerate() {
        let x = i * slot + 2;
        let mut y = H - BOTTOM;
        for (k, n) in counts.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let h = ((*n as usize * plot) / max as usize).max(1);
            y = y.saturating_sub(h);
            let _ = write!(
                svg,
                r#"<rect x="{x}" y="{y}" width="{}" height="{h}" fill="{}"><title>{}: {n}</title></rect>"#,
                slot - 4,
                SERIES[k].1,
                SERIES[k].0
            );
        }
        if i % 6 == 0 || i == HOURS - 1 {
            let _ = write!(
                svg,
                r#"<text x="{x}" y="{}" class="axis">{:02}:00</text>"#,
                H - 6,
                (first_hour + i) % 24
            );
        }
    }
    svg.push_str("</svg>");
    svg.push_str(r#"<div class="legend">"#);
    for (name, colour) in SERIES {
        let _ = write!(
            svg,
            r#"<span><i style="background:{colour}"></i>{}</span>"#,
            name.replace('_', " ")
        );
    }
    svg.push_str("</div>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{PluginRef, RunRecord, RunStatus, Trigger};
    use crate::store::{SqliteStore, Store};
    use chrono::Duration;

    /// Counted by the store (one query), bucketed here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_land_in_their_hour_and_status() {
        let now = "2026-11-28T15:30:00Z"
            .parse::<DateTime<Utc>>()
            .unwrap_or_default();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = SqliteStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let p = PluginRef {
            name: "p".into(),
            version: "1".into(),
            digest: "d".into(),
        };
        let runs = [
            (RunStatus::Succeeded, Duration::minutes(10)),
            (RunStatus::Failed, Duration::minutes(20)),
            (RunStatus::Succeeded, Duration::hours(2)),
            (RunStatus::Queued, Duration::hours(23)),
            (RunStatus::Succeeded, Duration::hours(25)),
        ];
        for (i, (status, ago)) in runs.into_iter().enumerate() {
            let mut r = RunRecord::begin(
                format!("r{i}"),
                &p,
                Trigger::Manual { by: "t".into() },
                true,
                status,
            );
            r.started_at = now - ago;
            store.put_run(&r).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let since = crate::record::timestamp(now - Duration::hours(24));
        let counts = store
            .run_counts(&since)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let b = buckets(&counts, now);
        assert_eq!(b[23], [1, 1, 0, 0, 0], "this hour");
        assert_eq!(b[21], [1, 0, 0, 0, 0], "two hours ago");
        assert_eq!(b[0], [0, 0, 0, 0, 1], "23 h ago, as other");
        assert_eq!(
            b.iter().flatten().sum::<u64>(),
            4,
            "older than a day: not counted"
        );
        let svg = runs_per_hour(&counts, now);
        assert_eq!(svg.matches("<rect").count(), 4);
    }
}
