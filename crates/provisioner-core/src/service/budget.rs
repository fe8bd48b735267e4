//! The budget: each profile's estimated spend in the calendar month (UTC) against its
//! `monthly_budget_usd`, from what the provisioner already holds (no billing API):
//! - each cluster's hours in the month times its instances' prices: a stack that still stands
//!   from its creation, one that is gone from the creation its destroy's history entry recorded
//!   to that destroy;
//! - each run's attempts, and the hold of a failed run's instance, times the instance type's
//!   on-demand price (an upper bound for spot).
//!
//! A start that would add cost (a deploy that creates, a run) is refused with `BudgetExceeded`
//! once the spend reached the budget; nothing running is stopped. The sweeper alerts at 80 % and
//! 100 %, once a month each; status shows the spend of every profile.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::{Catalog, Prices, Profile};
use crate::domain::history::{month_of, start_of_month};
use crate::domain::resource_names::{stack_cluster, STACK_NAME_PREFIX};
use crate::domain::{ClusterName, HistoryEntry, RunRecord, StackPhase};
use crate::error::{Error, Result};
use crate::ports::{Clock, History, Runs, StackSnapshot, Stacks};

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
fn usd(amount: f64) -> String {
    format!("{amount:.2}")
}

fn cents(amount: f64) -> f64 {
    (amount * 100.0).round() / 100.0
}

/// Hours of `[from, to]` within `[month_start, now]`.
fn hours_within(from: Timestamp, to: Timestamp, month_start: Timestamp, now: Timestamp) -> f64 {
    let (from, to) = (from.max(month_start), to.min(now));
    if to <= from {
        return 0.0;
    }
    to.duration_since(from).as_secs_f64() / 3600.0
}

fn spend_of<'a>(spends: &'a mut [ProfileSpend], profile: &Profile) -> Option<&'a mut ProfileSpend> {
    spends.iter_mut().find(|spend| spend.profile == profile.name)
}

/// What a month's spend is estimated from, as read at `now`.
pub struct SpendSources<'a> {
    pub now: Timestamp,
    /// The cluster stacks that stand (`Stacks::list` of the cluster prefix).
    pub stacks: &'a [StackSnapshot],
    /// Every cluster's history entries of `now`'s month.
    pub history: &'a [(ClusterName, HistoryEntry)],
    pub runs: &'a [RunRecord],
}

/// Every profile's estimated spend in `sources.now`'s month, in catalog order.
pub fn month_spend(catalog: &Catalog, sources: &SpendSources) -> Vec<ProfileSpend> {
    let mut spends: Vec<ProfileSpend> =
        catalog.profiles().iter().map(|profile| ProfileSpend::nothing(profile, sources.now)).collect();
    let standing = add_standing_clusters(catalog, sources, &mut spends);
    add_gone_clusters(catalog, sources, &standing, &mut spends);
    for run in sources.runs {
        let Ok(profile) = catalog.profile_for(&run.cluster) else { continue };
        if let Some(spend) = spend_of(&mut spends, profile) {
            spend.add_run(run, catalog.prices(), sources.now);
        }
    }
    for spend in &mut spends {
        spend.settle();
    }
    spends
}

/// Adds each cluster that stands, from its creation; answers them (cluster, creation).
fn add_standing_clusters(
    catalog: &Catalog,
    sources: &SpendSources,
    spends: &mut [ProfileSpend],
) -> Vec<(ClusterName, Timestamp)> {
    let (now, month_start) = (sources.now, start_of_month(sources.now));
    let mut standing = Vec::new();
    for stack in sources.stacks {
        let Some(cluster) = stack_cluster(&stack.name) else { continue };
        let (Ok(profile), Some(created)) = (catalog.profile_for(&cluster), stack.created_at) else { continue };
        // A failed create left nothing that bills.
        if matches!(stack.status.phase(), StackPhase::FailedReplaceable | StackPhase::Absent) {
            continue;
        }
        standing.push((cluster.clone(), created));
        let rate = profile.hourly_cost(&stack.parameters, catalog.prices()).unwrap_or(0.0);
        if let Some(spend) = spend_of(spends, profile) {
            spend.clusters_usd += rate * hours_within(created, now, month_start, now);
            spend.running.push(format!("cluster {cluster} ({} USD/h)", usd(rate)));
        }
    }
    standing
}

/// Adds each cluster that is gone: from its creation to the last destroy that saw it.
fn add_gone_clusters(
    catalog: &Catalog,
    sources: &SpendSources,
    standing: &[(ClusterName, Timestamp)],
    spends: &mut [ProfileSpend],
) {
    let (now, month_start) = (sources.now, start_of_month(sources.now));
    let mut gone: BTreeMap<(ClusterName, Timestamp), Timestamp> = BTreeMap::new();
    for (cluster, entry) in sources.history {
        let Some(created) = entry.stack_created_at.filter(|_| entry.operation == "destroy") else { continue };
        if standing.contains(&(cluster.clone(), created)) {
            continue;
        }
        let until = gone.entry((cluster.clone(), created)).or_insert(entry.at);
        *until = (*until).max(entry.at);
    }
    for ((cluster, created), until) in gone {
        let Ok(profile) = catalog.profile_for(&cluster) else { continue };
        let rate = profile.hourly_cost(&BTreeMap::new(), catalog.prices()).unwrap_or(0.0);
        if let Some(spend) = spend_of(spends, profile) {
            spend.clusters_usd += rate * hours_within(created, until, month_start, now);
        }
    }
}

impl ProfileSpend {
    /// The profile's spend before anything is added: none.
    fn nothing(profile: &Profile, now: Timestamp) -> ProfileSpend {
        ProfileSpend {
            profile: profile.name.clone(),
            month: month_of(now),
            spent_usd: 0.0,
            clusters_usd: 0.0,
            runs_usd: 0.0,
            budget_usd: profile.monthly_budget_usd,
            percent_of_budget: None,
            running: Vec::new(),
        }
    }

    /// Adds a run: each attempt's instance, and a failed run's held instance.
    fn add_run(&mut self, run: &RunRecord, prices: &Prices, now: Timestamp) {
        let month_start = start_of_month(now);
        let price = |instance_type: Option<&String>| instance_type.and_then(|t| prices.hourly(t)).unwrap_or(0.0);
        let active = !run.state.ended();
        for attempt in &run.attempts {
            let Some(instance_type) = attempt.instance_type.as_ref() else { continue };
            // One still running costs until now; one whose end was not recorded, until the run's.
            let end = attempt.ended_at.or(if active { None } else { run.ended_at }).unwrap_or(now);
            self.runs_usd += price(Some(instance_type)) * hours_within(attempt.started_at, end, month_start, now);
        }
        let last_type = run.attempts.last().and_then(|attempt| attempt.instance_type.as_ref());
        if let (Some(ended), Some(held_until)) = (run.ended_at, run.held_until) {
            self.runs_usd += price(last_type) * hours_within(ended, held_until, month_start, now);
            if held_until > now {
                self.running.push(format!("held instance of {} run {}", run.kind, run.run_id));
            }
        }
        if active {
            let on = last_type.map(|t| format!(", {t}")).unwrap_or_default();
            self.running.push(format!("{} run {} on {}{on}", run.kind, run.run_id, run.cluster));
        }
    }

    /// Rounds to the cent and sets the totals and the share of the budget.
    fn settle(&mut self) {
        self.clusters_usd = cents(self.clusters_usd);
        self.runs_usd = cents(self.runs_usd);
        self.spent_usd = cents(self.clusters_usd + self.runs_usd);
        // A budget of 0 is spent from the start.
        self.percent_of_budget =
            self.budget_usd
                .map(|budget| if budget > 0.0 { (self.spent_usd / budget * 1000.0).round() / 10.0 } else { 100.0 });
    }
}

/// The budget check of a start: reads what the spend is estimated from, and only for a profile
/// that has a budget.
#[derive(Clone)]
pub struct Ledger {
    catalog: Arc<Catalog>,
    stacks: Arc<dyn Stacks>,
    history: Arc<dyn History>,
    runs: Arc<dyn Runs>,
    clock: Arc<dyn Clock>,
}

impl Ledger {
    pub fn new(
        catalog: Arc<Catalog>,
        stacks: Arc<dyn Stacks>,
        history: Arc<dyn History>,
        runs: Arc<dyn Runs>,
        clock: Arc<dyn Clock>,
    ) -> Ledger {
        Ledger { catalog, stacks, history, runs, clock }
    }

    /// Every profile's spend this month: three reads (the stacks, the month's history, the runs).
    pub async fn spend(&self) -> Result<Vec<ProfileSpend>> {
        let now = self.clock.now();
        let month = month_of(now);
        let (stacks, history, runs) =
            tokio::join!(self.stacks.list(STACK_NAME_PREFIX), self.history.month(&month), self.runs.list());
        let (stacks, history, runs) = (stacks?, history?, runs?);
        Ok(month_spend(&self.catalog, &SpendSources { now, stacks: &stacks, history: &history, runs: &runs }))
    }

    /// `BudgetExceeded` when `profile` has a budget its spend this month has reached, before
    /// `start` (what would be started, for the message). A profile without a budget costs no read.
    pub async fn allow(&self, profile: &Profile, start: &str) -> Result<()> {
        if profile.monthly_budget_usd.is_none() {
            return Ok(());
        }
        let spends = self.spend().await?;
        match spends.into_iter().find(|spend| spend.profile == profile.name) {
            Some(spend) if spend.exhausted() => Err(Error::BudgetExceeded(format!(
                "{}; {start} was not started: destroy what is no longer needed, wait for next month, or raise \
                    monthly_budget_usd of profile '{}' in clusters/catalog.yaml",
                spend.describe(),
                profile.name
            ))),
            _ => Ok(()),
        }
    }
}
