//! Tiered retention (keep the last N, one per day for D days, one per week for W weeks), pure and testable.
//!
//! Days and weeks are counted over the snapshots that exist, not over the calendar: when snapshots stopped being
//! taken a month ago, `--keep-daily 7` still keeps the newest snapshot of each of the last 7 days that have one,
//! so a stalled job never lets retention wipe everything. The newest snapshot is always kept.

use std::collections::BTreeSet;

use time::OffsetDateTime;

/// How many snapshots to keep in each tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct RetentionPolicy {
    /// The N newest.
    pub keep_last: u32,
    /// The newest of each of the D most recent days that have a snapshot.
    pub keep_daily: u32,
    /// The newest of each of the W most recent ISO weeks that have a snapshot.
    pub keep_weekly: u32,
}

/// A policy that keeps nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--keep-last, --keep-daily and --keep-weekly are all 0: that retention would delete every snapshot but the newest; keep at least one in some tier (for example --keep-last 3)")]
pub struct EmptyPolicy;

impl RetentionPolicy {
    /// Refuse a policy that keeps nothing.
    pub fn validate(&self) -> Result<(), EmptyPolicy> {
        if self.keep_last == 0 && self.keep_daily == 0 && self.keep_weekly == 0 {
            Err(EmptyPolicy)
        } else {
            Ok(())
        }
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Snapshot name.
    pub name: String,
    /// When it was taken.
    #[serde(serialize_with = "serialize_time")]
    pub taken_at: OffsetDateTime,
    /// Why it is kept (`newest`, `last`, `daily`, `weekly`); empty when it goes.
    pub kept_by: Vec<&'static str>,
}

impl Verdict {
    /// Whether retention keeps it.
    pub fn keep(&self) -> bool {
        !self.kept_by.is_empty()
    }
}

fn serialize_time<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::rfc3339(*t))
}

/// Decide, for every snapshot, whether it stays. Returned newest first.
pub fn plan(snapshots: &[(String, OffsetDateTime)], policy: RetentionPolicy) -> Vec<Verdict> {
    let mut sorted: Vec<(String, OffsetDateTime)> = snapshots.to_vec();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let mut verdicts: Vec<Verdict> =
        sorted.into_iter().map(|(name, taken_at)| Verdict { name, taken_at, kept_by: Vec::new() }).collect();
    if let Some(first) = verdicts.first_mut() {
        first.kept_by.push("newest");
    }
    for v in verdicts.iter_mut().take(policy.keep_last as usize) {
        v.kept_by.push("last");
    }
    let mut days = BTreeSet::new();
    let mut weeks = BTreeSet::new();
    for v in verdicts.iter_mut() {
        let utc = v.taken_at.to_offset(time::UtcOffset::UTC);
        let day = utc.date();
        if days.len() < policy.keep_daily as usize && days.insert(day) {
            v.kept_by.push("daily");
        }
        let (year, week, _) = day.to_iso_week_date();
        if weeks.len() < policy.keep_weekly as usize && weeks.insert((year, week)) {
            v.kept_by.push("weekly");
        }
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn series(start: OffsetDateTime, count: usize, step: time::Duration) -> Vec<(String, OffsetDateTime)> {
        (0..count).map(|i| (format!("s{i:03}"), start + step * i as i32)).collect()
    }

    #[test]
    fn keeps_last_daily_and_weekly_tiers() {
        // Four snapshots a day for 30 days.
        let snaps = series(datetime!(2024-01-01 00:00 UTC), 120, time::Duration::hours(6));
        let verdicts = plan(&snaps, RetentionPolicy { keep_last: 3, keep_daily: 7, keep_weekly: 4 });
        let kept: Vec<&str> = verdicts.iter().filter(|v| v.keep()).map(|v| v.name.as_str()).collect();
        // Newest three, then the newest of each of 7 days (the first overlaps), then the newest of 4 ISO weeks
        // (2024-01-01 is a Monday: weeks end on s111 (already kept as daily), s083, s055).
        assert_eq!(kept.len(), 3 + 6 + 2, "{kept:?}");
        assert!(kept.contains(&"s083") && kept.contains(&"s055"), "{kept:?}");
        assert_eq!(&kept[..3], &["s119", "s118", "s117"]);
        assert!(verdicts[0].kept_by.contains(&"newest"));
    }

    #[test]
    fn a_stalled_job_never_drops_below_the_minimum() {
        // Daily snapshots that stopped 60 days ago: retention counts days that have snapshots, not the calendar.
        let snaps = series(datetime!(2024-01-01 03:00 UTC), 10, time::Duration::days(1));
        let verdicts = plan(&snaps, RetentionPolicy { keep_last: 0, keep_daily: 7, keep_weekly: 0 });
        assert_eq!(verdicts.iter().filter(|v| v.keep()).count(), 7);
        let one = plan(&snaps[..1], RetentionPolicy { keep_last: 0, keep_daily: 0, keep_weekly: 1 });
        assert!(one[0].keep());
    }

    #[test]
    fn the_newest_is_always_kept_and_an_empty_policy_is_refused() {
        let snaps = series(datetime!(2024-01-01 00:00 UTC), 3, time::Duration::hours(1));
        let verdicts = plan(&snaps, RetentionPolicy::default());
        assert_eq!(verdicts.iter().filter(|v| v.keep()).map(|v| v.name.as_str()).collect::<Vec<_>>(), ["s002"]);
        assert_eq!(RetentionPolicy::default().validate(), Err(EmptyPolicy));
        assert!(RetentionPolicy { keep_last: 1, ..Default::default() }.validate().is_ok());
    }
}
