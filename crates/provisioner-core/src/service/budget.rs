//! The budget: each profile's estimated spend in the calendar month (UTC) against its
//! `monthly_budget_usd`, from what the provisioner already holds (no billing API). Each profile's
//! books (`domain::books`) keep it as it happens: a cluster is begun before its stack is created
//! and settled when a destroy removed it; a run's attempt before its instance is launched and when
//! it ended; a failed run's held instance when the run ended and when its hold did. A check is one
//! read of them. The sweeper recounts them from the records once a day ([`recount`]) and corrects
//! any difference.
//!
//! A start that would add cost (a deploy that creates, a run) is refused with `BudgetExceeded`
//! once the spend reached the budget; nothing running is stopped. The sweeper alerts at 80 % and
//! 100 %, once a month each; status shows the spend of every profile.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::{Catalog, Prices, Profile};
use crate::domain::books::{attempt_entry_id, hold_entry_id, hours_within, Books, CostKind, SpendEntry};
use crate::domain::history::{month_of, start_of_month};
use crate::domain::resource_names::stack_cluster;
use crate::domain::{ClusterName, HistoryEntry, RunRecord, StackPhase};
use crate::error::{Error, Result};
use crate::ports::{Clock, Spend, StackSnapshot};

/// The levels of the budget at which the sweeper alerts, once a month each.
pub const ALERT_PERCENTS: [u32; 2] = [80, 100];

/// One profile's estimated spend in one month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileSpend {
    pub profile: String,
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// Clusters and runs together, in US dollars.
    pub spent_usd: f64,
    pub clusters_usd: f64,
    pub runs_usd: f64,
    /// None: the profile has no budget.
    pub budget_usd: Option<f64>,
    /// The spend as a share of the budget, in percent.
    pub percent_of_budget: Option<f64>,
    /// What of the profile still costs: clusters, active runs, held instances.
    pub running: Vec<String>,
}

impl ProfileSpend {
    /// Whether the spend has reached the budget.
    pub fn exhausted(&self) -> bool {
        self.budget_usd.is_some_and(|budget| self.spent_usd >= budget)
    }

    /// The levels of [`ALERT_PERCENTS`] the spend has reached.
    pub fn alert_levels(&self) -> Vec<u32> {
        let Some(budget) = self.budget_usd else { return Vec::new() };
        ALERT_PERCENTS.into_iter().filter(|percent| self.spent_usd >= budget * f64::from(*percent) / 100.0).collect()
    }

    /// One sentence: spent, of which budget, in which month, and what still runs.
    pub fn describe(&self) -> String {
        let budget = self.budget_usd.map_or_else(|| "no budget".to_owned(), |b| format!("its {} USD budget", usd(b)));
        let running = if self.running.is_empty() {
            "nothing of it is running".to_owned()
        } else {
            format!("still running: {}", self.running.join(", "))
        };
        format!(
            "profile '{}' has spent an estimated {} USD of {budget} in {} (UTC; clusters {}, runs {}); {running}",
            self.profile,
            usd(self.spent_usd),
            self.month,
            usd(self.clusters_usd),
            usd(self.runs_usd)
        )
    }
}

/// Dollars to the cent, as text.
pub(super) fn usd(amount: f64) -> String {
    format!("{amount:.2}")
}

pub(super) fn cents(amount: f64) -> f64 {
    (amount * 100.0).round() / 100.0
}

impl ProfileSpend {
    /// `profile`'s spend at `now` as its books say.
    pub fn of_books(profile: &Profile, books: &Books, now: Timestamp) -> ProfileSpend {
        let spent = books.spent(now);
        let (clusters_usd, runs_usd) = (cents(spent.clusters_usd), cents(spent.runs_usd));
        let spent_usd = cents(clusters_usd + runs_usd);
        let budget_usd = profile.monthly_budget_usd;
        // A budget of 0 is spent from the start.
        let percent_of_budget =
            budget_usd.map(|budget| if budget > 0.0 { (spent_usd / budget * 1000.0).round() / 10.0 } else { 100.0 });
        ProfileSpend {
            profile: profile.name.clone(),
            month: month_of(now),
            spent_usd,
            clusters_usd,
            runs_usd,
            budget_usd,
            percent_of_budget,
            running: spent.running,
        }
    }
}

/// What a month's spend is recounted from, as read at `now`.
pub struct SpendSources<'a> {
    pub now: Timestamp,
    /// The cluster stacks that stand (`Stacks::list` of the cluster prefix).
    pub stacks: &'a [StackSnapshot],
    /// Every cluster's history entries of `now`'s month.
    pub history: &'a [(ClusterName, HistoryEntry)],
    pub runs: &'a [RunRecord],
}

/// Every profile's books recounted from the records, in catalog order (the sweeper's daily
/// recount, `recount.rs`, corrects the books with them):
/// - each cluster's hours in the month times its instances' prices: a stack that still stands
///   from its creation, one that is gone from the creation its destroy's history entry recorded
///   to that destroy;
/// - each run's attempts, and the hold of a failed run's instance, times the instance type's
///   on-demand price (an upper bound for spot).
pub fn recount(catalog: &Catalog, sources: &SpendSources) -> Vec<(String, Books)> {
    let month = month_of(sources.now);
    let mut books: BTreeMap<&str, Books> = catalog
        .profiles()
        .iter()
        .map(|profile| {
            (profile.name.as_str(), Books { month: month.clone(), recounted_at: Some(sources.now), ..Books::default() })
        })
        .collect();
    let of = |cluster: &ClusterName| catalog.profile_for(cluster).ok().map(|profile| profile.name.as_str());
    let standing = standing_clusters(catalog, sources);
    for (cluster, entry) in &standing {
        if let Some(books) = of(cluster).and_then(|profile| books.get_mut(profile)) {
            books.entries.push(entry.clone());
        }
    }
    for (cluster, cost) in gone_clusters(catalog, sources, &standing) {
        if let Some(books) = of(&cluster).and_then(|profile| books.get_mut(profile)) {
            books.clusters_usd += cost;
        }
    }
    for run in sources.runs {
        if let Some(books) = of(&run.cluster).and_then(|profile| books.get_mut(profile)) {
            add_run(books, run, catalog.prices(), sources.now);
        }
    }
    catalog
        .profiles()
        .iter()
        .filter_map(|profile| Some((profile.name.clone(), books.remove(profile.name.as_str())?)))
        .collect()
}

/// Each cluster that stands, from its creation, as an entry.
fn standing_clusters(catalog: &Catalog, sources: &SpendSources) -> Vec<(ClusterName, SpendEntry)> {
    let mut standing = Vec::new();
    for stack in sources.stacks {
        let Some(cluster) = stack_cluster(&stack.name) else { continue };
        let (Ok(profile), Some(created)) = (catalog.profile_for(&cluster), stack.created_at) else { continue };
        // A failed create left nothing that bills.
        if matches!(stack.status.phase(), StackPhase::FailedReplaceable | StackPhase::Absent) {
            continue;
        }
        let rate = profile.hourly_cost(&stack.parameters, catalog.prices()).unwrap_or(0.0);
        standing.push((cluster.clone(), SpendEntry::cluster(cluster.as_str(), rate, created)));
    }
    standing
}

/// Each cluster that is gone, with its cost in the month: from its creation to the last destroy
/// that saw it.
fn gone_clusters(
    catalog: &Catalog,
    sources: &SpendSources,
    standing: &[(ClusterName, SpendEntry)],
) -> Vec<(ClusterName, f64)> {
    let (now, month_start) = (sources.now, start_of_month(sources.now));
    let mut gone: BTreeMap<(ClusterName, Timestamp), Timestamp> = BTreeMap::new();
    for (cluster, entry) in sources.history {
        let Some(created) = entry.stack_created_at.filter(|_| entry.operation == "destroy") else { continue };
        if standing.iter().any(|(name, standing)| name == cluster && standing.since == created) {
            continue;
        }
        let until = gone.entry((cluster.clone(), created)).or_insert(entry.at);
        *until = (*until).max(entry.at);
    }
    let mut costs = Vec::new();
    for ((cluster, created), until) in gone {
        let Ok(profile) = catalog.profile_for(&cluster) else { continue };
        let rate = profile.hourly_cost(&BTreeMap::new(), catalog.prices()).unwrap_or(0.0);
        costs.push((cluster, rate * hours_within(created, until, month_start, now)));
    }
    costs
}

/// A run's cost in the books: each attempt's instance (settled once it ended, an entry while it
/// runs), and a failed run's held instance.
fn add_run(books: &mut Books, run: &RunRecord, prices: &Prices, now: Timestamp) {
    let month_start = start_of_month(now);
    let price = |instance_type: &str| prices.hourly(instance_type).unwrap_or(0.0);
    let active = !run.state.ended();
    for attempt in &run.attempts {
        let Some(instance_type) = attempt.instance_type.as_ref() else { continue };
        // One whose end was not recorded ended with the run.
        match attempt.ended_at.or(if active { None } else { run.ended_at }) {
            Some(end) => {
                books.runs_usd += price(instance_type) * hours_within(attempt.started_at, end, month_start, now)
            }
            None => books.entries.push(attempt_entry(
                run,
                attempt.number,
                instance_type,
                price(instance_type),
                attempt.started_at,
            )),
        }
    }
    let last_type = run.attempts.last().and_then(|attempt| attempt.instance_type.as_deref());
    if let (Some(ended), Some(held_until)) = (run.ended_at, run.held_until) {
        let rate = last_type.map_or(0.0, price);
        if held_until > now {
            books.entries.push(hold_entry(run, rate, ended, held_until));
        } else {
            books.runs_usd += rate * hours_within(ended, held_until, month_start, now);
        }
    }
}

/// The entry of a run's attempt on an instance of `instance_type`.
pub fn attempt_entry(
    run: &RunRecord,
    attempt: u32,
    instance_type: &str,
    usd_per_hour: f64,
    since: Timestamp,
) -> SpendEntry {
    SpendEntry {
        id: attempt_entry_id(run.run_id.as_str(), attempt),
        kind: CostKind::Run,
        usd_per_hour,
        since,
        until: None,
        label: format!("{} run {} on {}, {instance_type}", run.kind, run.run_id, run.cluster),
    }
}

/// The entry of a failed run's instance held until `until`.
pub fn hold_entry(run: &RunRecord, usd_per_hour: f64, since: Timestamp, until: Timestamp) -> SpendEntry {
    SpendEntry {
        id: hold_entry_id(run.run_id.as_str()),
        kind: CostKind::Run,
        usd_per_hour,
        since,
        until: Some(until),
        label: format!("held instance of {} run {}", run.kind, run.run_id),
    }
}

/// Every profile's spend recounted from the records, in catalog order.
pub fn month_spend(catalog: &Catalog, sources: &SpendSources) -> Vec<ProfileSpend> {
    recount(catalog, sources)
        .iter()
        .filter_map(|(name, books)| {
            let profile = catalog.profiles().iter().find(|profile| profile.name == *name)?;
            Some(ProfileSpend::of_books(profile, books, sources.now))
        })
        .collect()
}

/// The budget check of a start, and the books it reads: one read of the profile's books.
#[derive(Clone)]
pub struct Ledger {
    catalog: Arc<Catalog>,
    spend: Arc<dyn Spend>,
    clock: Arc<dyn Clock>,
}

impl Ledger {
    pub fn new(catalog: Arc<Catalog>, spend: Arc<dyn Spend>, clock: Arc<dyn Clock>) -> Ledger {
        Ledger { catalog, spend, clock }
    }

    /// `profile`'s spend this month: one read.
    pub async fn spend_of(&self, profile: &Profile) -> Result<ProfileSpend> {
        let books = self.spend.books(&profile.name).await?;
        Ok(ProfileSpend::of_books(profile, &books, self.clock.now()))
    }

    /// Every profile's spend this month, in catalog order: one read each, together.
    pub async fn spend(&self) -> Result<Vec<ProfileSpend>> {
        futures::future::try_join_all(self.catalog.profiles().iter().map(|profile| self.spend_of(profile))).await
    }

    /// `BudgetExceeded` when `profile` has a budget its spend this month has reached, before
    /// `start` (what would be started, for the message). A profile without a budget costs no read.
    pub async fn allow(&self, profile: &Profile, start: &str) -> Result<()> {
        if profile.monthly_budget_usd.is_none() {
            return Ok(());
        }
        let spend = self.spend_of(profile).await?;
        if !spend.exhausted() {
            return Ok(());
        }
        Err(Error::BudgetExceeded(format!(
            "{}; {start} was not started: destroy what is no longer needed, wait for next month, or raise \
                monthly_budget_usd of profile '{}' in clusters/catalog.yaml",
            spend.describe(),
            profile.name
        )))
    }

    /// Counts `entry` in `profile`'s books from now on: before it costs, so a failure here starts
    /// nothing (the caller fails).
    pub async fn begin(&self, profile: &str, entry: SpendEntry) -> Result<()> {
        let now = self.clock.now();
        self.spend.change(profile, &move |books: Books| books.begin(entry.clone(), now)).await.map(drop)
    }

    /// Ends entry `id` of `profile`'s books at `end` (without cost when `free`). A failure leaves
    /// it counting, which only brings the budget's refusal sooner; the sweeper's recount ends it.
    pub async fn settle(&self, profile: &str, id: &str, end: Timestamp, free: bool) {
        let change = |books: Books| books.settle(id, end, free);
        if let Err(error) = self.spend.change(profile, &change).await {
            tracing::warn!(profile, id, %error, "could not settle an entry of the books; the recount will");
        }
    }
}
