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

/// The most bytes an entry takes as stored (its JSON): (1000 + 100) entries of it, with their
/// keys, fit DynamoDB's 400 KB item. Longer details (whole error texts) are shortened.
pub const MAX_ENTRY_BYTES: usize = 300;

impl HistoryEntry {
    /// The entry as stored: its JSON within [`MAX_ENTRY_BYTES`], its detail (then its version)
    /// shortened with `…` when it would not fit.
    pub fn stored_json(&self) -> String {
        let mut entry = self.clone();
        loop {
            let json = serde_json::to_string(&entry).unwrap_or_default();
            let over = json.len().saturating_sub(MAX_ENTRY_BYTES);
            let field = match (&mut entry.detail, &mut entry.version) {
                _ if over == 0 => return json,
                (Some(detail), _) if !detail.is_empty() => detail,
                (_, Some(version)) if !version.is_empty() => version,
                _ => return json,
            };
            let mut cut = field.len().saturating_sub(over + '…'.len_utf8());
            while !field.is_char_boundary(cut) {
                cut -= 1;
            }
            field.truncate(cut);
            if !field.is_empty() {
                field.push('…');
            }
        }
    }

    /// Whether it is still kept at `now`.
    pub fn kept_at(&self, now: Timestamp) -> bool {
        self.at + HISTORY_RETENTION > now
    }
}

/// How long a notice's claim that was never confirmed sent keeps others from claiming it: less
/// than the sweeper's period, so the next sweep sends what a failed one did not.
pub const CLAIM_LEASE: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

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

#[cfg(test)]
mod stored_tests {
    use super::*;

    /// A month of the most entries, each with a whole error text, fits DynamoDB's 400 KB item.
    #[test]
    fn an_entry_with_a_whole_error_text_is_stored_within_its_share_of_the_item() {
        let entry = HistoryEntry {
            operation: "deploy".into(),
            at: "2026-12-05T12:00:00Z".parse().unwrap(),
            requested_by: Some("x".repeat(64)),
            outcome: "DeployFailed".into(),
            version: Some("v".repeat(200)),
            detail: Some("é".repeat(3000)),
            stack_created_at: Some("2026-12-05T11:00:00Z".parse().unwrap()),
        };
        let json = entry.stored_json();
        assert!(json.len() <= MAX_ENTRY_BYTES, "{} bytes: {json}", json.len());
        let stored: HistoryEntry = serde_json::from_str(&json).unwrap();
        assert!(stored.detail.as_deref().is_some_and(|d| d.starts_with('é')) || stored.detail.as_deref() == Some(""));
        assert_eq!((stored.stack_created_at, stored.outcome.as_str()), (entry.stack_created_at, "DeployFailed"));
        // Each entry's key is its time and 8 characters: about 40 bytes more.
        let item_bytes =
            (crate::table::history::MAX_ENTRIES + crate::table::history::SPEND_RESERVE) * (MAX_ENTRY_BYTES + 40);
        assert!(item_bytes < 400 * 1024, "{item_bytes}");
        let short = HistoryEntry { detail: Some("created".into()), version: None, ..entry };
        assert_eq!(short.stored_json(), serde_json::to_string(&short).unwrap(), "what fits is kept whole");
    }
}
