//! A profile's books: its spend this month kept as it happens, so the budget check of a start is
//! one read whatever the history holds. What still costs is an entry (a cluster since its
//! creation, a run's attempt since it began, a failed run's held instance until its hold ends),
//! begun before it costs; its end settles it, adding its cost within the month to the month's
//! settled sums, once. The sweeper recounts the books from the records once a day and corrects
//! them (`service::budget`), so a lost write drifts them for a day at most.
//!
//! Every change is a pure function of the books read; the store writes it conditioned on them.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::history::{month_of, start_of_month};

/// How long a settled run's id is remembered: a late begin of it (a launch that lost the race with
/// the run's end) is refused within that time, so it is not counted twice. A cluster's is not: its
/// operations take turns under its lock, and a destroyed cluster may be deployed again at once.
pub const SETTLED_KEPT: SignedDuration = SignedDuration::from_hours(48);
/// An entry begun this lately is kept by a recount that does not find it in the records: what it
/// counts may not be recorded yet (a stack being created, an instance being launched).
pub const JUST_BEGUN: SignedDuration = SignedDuration::from_mins(15);
/// How often the sweeper recounts a profile's books from the records.
pub const RECOUNT_EVERY: SignedDuration = SignedDuration::from_hours(24);

/// What an entry's cost is counted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostKind {
    Cluster,
    Run,
}

/// One thing that costs while it lasts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpendEntry {
    /// `cluster#NAME`, `run#RUN-ID#ATTEMPT` or `hold#RUN-ID`.
    pub id: String,
    pub kind: CostKind,
    pub usd_per_hour: f64,
    pub since: Timestamp,
    /// When it stops costing by itself (a hold's end); `None`: when it is settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    /// What status says still runs: "cluster X (1.20 USD/h)".
    pub label: String,
}

impl SpendEntry {
    /// The entry of a cluster's stack.
    pub fn cluster(cluster: &str, usd_per_hour: f64, since: Timestamp) -> SpendEntry {
        SpendEntry {
            id: cluster_entry_id(cluster),
            kind: CostKind::Cluster,
            usd_per_hour,
            since,
            until: None,
            label: format!("cluster {cluster} ({usd_per_hour:.2} USD/h)"),
        }
    }

    /// Its cost within `[month_start, end]` (and before `until`).
    pub fn cost_within(&self, month_start: Timestamp, end: Timestamp) -> f64 {
        let end = self.until.map_or(end, |until| until.min(end));
        self.usd_per_hour * hours_within(self.since, end, month_start, end)
    }
}

pub fn cluster_entry_id(cluster: &str) -> String {
    format!("cluster#{cluster}")
}

pub fn attempt_entry_id(run_id: &str, attempt: u32) -> String {
    format!("run#{run_id}#{attempt}")
}

pub fn hold_entry_id(run_id: &str) -> String {
    format!("hold#{run_id}")
}

/// Hours of `[from, to]` within `[month_start, now]`.
pub fn hours_within(from: Timestamp, to: Timestamp, month_start: Timestamp, now: Timestamp) -> f64 {
    let (from, to) = (from.max(month_start), to.min(now));
    if to <= from {
        return 0.0;
    }
    to.duration_since(from).as_secs_f64() / 3600.0
}

/// One profile's books.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Books {
    /// `YYYY-MM`: the month the settled sums are of.
    pub month: String,
    /// What ended this month cost within it, in US dollars.
    pub clusters_usd: f64,
    pub runs_usd: f64,
    /// What still costs.
    pub entries: Vec<SpendEntry>,
    /// Runs' ids settled lately, with when ([`SETTLED_KEPT`]).
    #[serde(default)]
    pub settled: Vec<(String, Timestamp)>,
    /// When the sweeper last recounted them.
    #[serde(default)]
    pub recounted_at: Option<Timestamp>,
}

/// What the books say a profile spent this month, as of a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Spent {
    pub clusters_usd: f64,
    pub runs_usd: f64,
    /// The labels of what still costs.
    pub running: Vec<String>,
}

impl Books {
    /// The books at `now`: a new month starts with nothing settled, and keeps what still costs.
    pub fn at(mut self, now: Timestamp) -> Books {
        let month = month_of(now);
        if self.month != month {
            let start = start_of_month(now);
            self.month = month;
            (self.clusters_usd, self.runs_usd) = (0.0, 0.0);
            self.entries.retain(|entry| entry.until.is_none_or(|until| until > start));
        }
        self.settled.retain(|(_, at)| now - *at <= SETTLED_KEPT);
        self
    }

    /// What was spent in `now`'s month by `now`.
    pub fn spent(&self, now: Timestamp) -> Spent {
        let start = start_of_month(now);
        let same_month = self.month == month_of(now);
        let (mut clusters_usd, mut runs_usd) = if same_month { (self.clusters_usd, self.runs_usd) } else { (0.0, 0.0) };
        let mut running = Vec::new();
        for entry in &self.entries {
            let cost = entry.cost_within(start, now);
            match entry.kind {
                CostKind::Cluster => clusters_usd += cost,
                CostKind::Run => runs_usd += cost,
            }
            if entry.until.is_none_or(|until| until > now) {
                running.push(entry.label.clone());
            }
        }
        Spent { clusters_usd, runs_usd, running }
    }

    /// Counts `entry` from now on (one of the same id is replaced); `None` when it was settled
    /// lately (a late begin, which would count it twice).
    pub fn begin(self, entry: SpendEntry, now: Timestamp) -> Option<Books> {
        let mut books = self.at(now);
        if books.settled.iter().any(|(id, _)| *id == entry.id) {
            return None;
        }
        books.entries.retain(|kept| kept.id != entry.id);
        books.entries.push(entry);
        Some(books)
    }

    /// Ends entry `id` at `end`, its cost within the month added to the settled sums (nothing
    /// when `free`: it never cost, as a launch that was refused); `None` when there is no such
    /// entry (settled already, or never begun).
    pub fn settle(self, id: &str, end: Timestamp, free: bool) -> Option<Books> {
        let mut books = self.at(end);
        let index = books.entries.iter().position(|entry| entry.id == id)?;
        let entry = books.entries.remove(index);
        if !free {
            let cost = entry.cost_within(start_of_month(end), end);
            match entry.kind {
                CostKind::Cluster => books.clusters_usd += cost,
                CostKind::Run => books.runs_usd += cost,
            }
        }
        if entry.kind == CostKind::Run {
            books.settled.push((entry.id, end));
        }
        Some(books)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn run(id: &str, since: &str) -> SpendEntry {
        SpendEntry {
            id: id.into(),
            kind: CostKind::Run,
            usd_per_hour: 2.0,
            since: at(since),
            until: None,
            label: id.into(),
        }
    }

    #[test]
    fn an_entry_costs_until_settled_then_its_cost_is_kept_once() {
        let now = at("2026-12-05T10:00:00Z");
        let books = Books::default().begin(run("run#a#1", "2026-12-05T08:00:00Z"), now).unwrap();
        assert_eq!(books.spent(now).runs_usd, 4.0);
        assert_eq!(books.spent(now).running, ["run#a#1"]);
        let books = books.settle("run#a#1", at("2026-12-05T11:00:00Z"), false).unwrap();
        assert_eq!(books.spent(at("2026-12-05T12:00:00Z")).runs_usd, 6.0);
        assert!(books.spent(now).running.is_empty());
        assert_eq!(books.clone().settle("run#a#1", at("2026-12-05T12:00:00Z"), false), None, "settled once");
        assert_eq!(books.begin(run("run#a#1", "2026-12-05T08:00:00Z"), now), None, "a late begin is refused");
    }

    #[test]
    fn a_destroyed_cluster_may_be_begun_again_at_once() {
        let now = at("2026-12-05T10:00:00Z");
        let cluster = SpendEntry::cluster("ci-1", 1.0, at("2026-12-05T08:00:00Z"));
        let books = Books::default().begin(cluster.clone(), now).unwrap().settle("cluster#ci-1", now, false).unwrap();
        let again = books.begin(SpendEntry { since: now, ..cluster }, now).unwrap();
        assert_eq!(again.spent(at("2026-12-05T11:00:00Z")).clusters_usd, 3.0);
    }

    #[test]
    fn a_free_settle_drops_the_entry_without_cost() {
        let now = at("2026-12-05T10:00:00Z");
        let books = Books::default().begin(run("run#a#1", "2026-12-05T08:00:00Z"), now).unwrap();
        let books = books.settle("run#a#1", now, true).unwrap();
        assert_eq!(books.spent(now).runs_usd, 0.0);
    }

    #[test]
    fn a_new_month_starts_from_nothing_settled_and_counts_what_runs_from_its_start() {
        let books = Books::default().begin(run("run#a#1", "2026-11-30T22:00:00Z"), at("2026-11-30T22:00:00Z"));
        let books = books.unwrap().begin(run("run#b#1", "2026-11-30T20:00:00Z"), at("2026-11-30T22:00:00Z"));
        let books = books.unwrap().settle("run#b#1", at("2026-11-30T23:00:00Z"), false).unwrap();
        assert_eq!(books.spent(at("2026-11-30T23:00:00Z")).runs_usd, 8.0);
        // December: only the hour of run a since midnight.
        assert_eq!(books.spent(at("2026-12-01T01:00:00Z")).runs_usd, 2.0);
        let december = books.settle("run#a#1", at("2026-12-01T01:00:00Z"), false).unwrap();
        assert_eq!((december.month.as_str(), december.runs_usd), ("2026-12", 2.0));
    }

    #[test]
    fn a_hold_stops_costing_at_its_end() {
        let now = at("2026-12-05T10:00:00Z");
        let hold = SpendEntry { until: Some(at("2026-12-05T09:00:00Z")), ..run("hold#a", "2026-12-05T08:00:00Z") };
        let books = Books::default().begin(hold, now).unwrap();
        assert_eq!(books.spent(now).runs_usd, 2.0);
        assert!(books.spent(now).running.is_empty());
        assert!(books.at(at("2027-01-01T00:00:00Z")).entries.is_empty(), "gone in the next month");
    }
}
