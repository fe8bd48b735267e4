//! A cluster's history: every operation on it (deploy, schedule_destroy, destroy, a fired
//! destroy, the sweeper's destroys), with when, who asked, how it ended and at which version.
//! Kept 400 days; `status {"cluster": NAME}` shows the newest first.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// How long an entry is kept.
pub const HISTORY_RETENTION: SignedDuration = SignedDuration::from_hours(400 * 24);
/// How many entries `status` shows at least (when the cluster has had that many).
pub const HISTORY_SHOWN: usize = 50;

/// One operation on a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// `deploy`, `schedule_destroy` or `destroy`.
    pub operation: String,
    pub at: Timestamp,
    /// Who asked, when they said; a fired schedule and the sweeper name themselves in `detail`.
    pub requested_by: Option<String>,
    /// `success`, or the contract's error code.
    pub outcome: String,
    /// The version the cluster runs (or was asked to), when the operation knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What else it did: created or found running, the schedule's time, which schedule fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For a destroy that found the cluster's stack: when that stack was created. With `at`, the
    /// hours the cluster ran, which the month's spend counts once the stack is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_created_at: Option<Timestamp>,
}

impl HistoryEntry {
    /// Whether it is still kept at `now`.
    pub fn kept_at(&self, now: Timestamp) -> bool {
        self.at + HISTORY_RETENTION > now
    }
}

/// A notice sent once, by whichever caller claims it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnceNotice {
    /// The warning before destroy schedule `schedule`, which fires at `at`.
    DestroyWarning { schedule: String, at: Timestamp },
    /// `profile`'s estimated spend reached `percent` % of its budget in the month that begins at
    /// `month_start`.
    BudgetAlert { profile: String, month_start: Timestamp, percent: u32 },
}

impl OnceNotice {
    /// Until when its claim is kept: past the time it is about, after which none would send it.
    pub fn kept_until(&self) -> Timestamp {
        match self {
            OnceNotice::DestroyWarning { at, .. } => *at + SignedDuration::from_hours(24),
            OnceNotice::BudgetAlert { month_start, .. } => *month_start + SignedDuration::from_hours(62 * 24),
        }
    }
}

/// The first instant of the calendar month (UTC) `at` falls in.
pub fn start_of_month(at: Timestamp) -> Timestamp {
    let date = jiff::tz::TimeZone::UTC.to_datetime(at).date().first_of_month();
    jiff::tz::TimeZone::UTC.to_timestamp(date.to_datetime(jiff::civil::Time::midnight())).unwrap_or(at)
}

/// The calendar month (UTC) `at` falls in, `YYYY-MM`: history is kept by cluster and month.
pub fn month_of(at: Timestamp) -> String {
    at.strftime("%Y-%m").to_string()
}

/// The months, newest first, that may hold entries kept at `now`.
pub fn months_kept(now: Timestamp) -> Vec<String> {
    let mut months = Vec::new();
    let utc = jiff::tz::TimeZone::UTC;
    let mut date = utc.to_datetime(now).date().first_of_month();
    let oldest = utc.to_datetime(now - HISTORY_RETENTION).date().first_of_month();
    while date >= oldest {
        months.push(date.strftime("%Y-%m").to_string());
        match date.checked_sub(jiff::Span::new().months(1)) {
            Ok(previous) => date = previous,
            Err(_) => break,
        }
    }
    months
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_kept_400_days_in_monthly_items_read_newest_first() {
        let now: Timestamp = "2026-12-02T12:00:00Z".parse().unwrap();
        let months = months_kept(now);
        assert_eq!(months.first().map(String::as_str), Some("2026-12"));
        assert_eq!(months.last().map(String::as_str), Some("2025-10"), "400 days back is 2025-10-28");
        assert_eq!(months.len(), 15);
        assert_eq!(month_of("2026-01-31T23:59:59Z".parse().unwrap()), "2026-01");
        let entry = |at: &str| HistoryEntry {
            operation: "deploy".into(),
            at: at.parse().unwrap(),
            requested_by: None,
            outcome: "success".into(),
            version: None,
            detail: None,
            stack_created_at: None,
        };
        assert!(entry("2025-10-29T00:00:00Z").kept_at(now));
        assert_eq!(start_of_month(now), "2026-12-01T00:00:00Z".parse::<Timestamp>().unwrap());
        assert_eq!(start_of_month("2026-03-01T00:00:00Z".parse().unwrap()), "2026-03-01T00:00:00Z".parse().unwrap());
        let alert = OnceNotice::BudgetAlert { profile: "ci".into(), month_start: start_of_month(now), percent: 80 };
        assert_eq!(alert.kept_until(), "2027-02-01T00:00:00Z".parse::<Timestamp>().unwrap());
        assert!(!entry("2025-10-28T11:00:00Z").kept_at(now));
    }
}
