//! STATUS: every cluster (profile, stack status, version, age, scheduled destroy, costs), every
//! active run with its attempts, the last ended runs, the instances failed runs hold for
//! debugging (until when, how to connect), and what the next sweep would do, from one survey.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use super::budget::ProfileSpend;
use super::survey::{Operations, Survey, RECENT_RUNS};
use super::sweeper::{findings, Finding};
use crate::catalog::{Catalog, Prices};
use crate::domain::history::HISTORY_SHOWN;
use crate::domain::launch_log::{boot_times, launch_errors, BootTimes, LaunchErrors};
use crate::domain::resource_names::{scheduled_cluster, stack_cluster};
use crate::domain::run::RunView;
use crate::domain::{ClusterName, HistoryEntry, RunId, RunKind, RunRecord, StepStatus};
use crate::error::Result;
use crate::ports::{EndedRuns, StackSnapshot, TaggedInstance};

#[derive(Debug, Clone, Serialize)]
pub struct StatusResponse {
    pub status: &'static str,
    pub at: String,
    pub clusters: Vec<ClusterStatus>,
    /// Active runs, oldest first.
    pub runs: Vec<RunStatus>,
    /// The last ended runs, newest first.
    pub recent_runs: Vec<RecentRun>,
    /// Instances of failed runs kept up for debugging, the soonest to go first.
    pub held: Vec<HeldInstance>,
    /// What the next sweep would act on.
    pub sweeper: Vec<Finding>,
    /// For `{"cluster": NAME}`: the cluster's operations, newest first (at least the last 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryEntry>>,
    /// Each profile's estimated spend this month (UTC) against its monthly budget.
    pub budgets: Vec<ProfileSpend>,
    /// Where the costs come from.
    pub prices: PriceBasis,
    /// The runner images TEST runs may launch from, newest first.
    pub runner_images: Vec<RunnerImageStatus>,
    /// The last runner image run, when one is kept.
    pub last_image_refresh: Option<ImageRefresh>,
    /// Every failed launch and spot interruption of the last 7 days, by instance type, market and
    /// code, the latest first.
    pub launch_errors: Vec<LaunchErrors>,
    /// How long each instance type took from launch to its first step over the last 7 days.
    pub boot_times: Vec<BootTimes>,
}

/// A runner image as status lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RunnerImageStatus {
    pub image_id: String,
    pub architecture: String,
    pub state: String,
    pub created_at: Option<String>,
    pub age_days: Option<f64>,
    pub plan_hash: String,
    /// Whether the catalog's runner image plan made it: TEST runs launch only from such images.
    pub current_plan: bool,
    pub run_id: Option<RunId>,
    /// What a TEST run launched from it passes at once, once each step's check passes (the
    /// steps the current plan says it holds); the build-environment image its run pulled, which
    /// every run pulls again.
    pub holds: Vec<String>,
    pub build_image: Option<String>,
    /// That image's digest as its run pulled it, and the versions of the tools it installed.
    pub build_image_digest: Option<String>,
    pub tools: Option<String>,
}

/// The last runner image run (the refresh): how it ended, and why when it failed.
#[derive(Debug, Clone, Serialize)]
pub struct ImageRefresh {
    pub run_id: RunId,
    pub state: &'static str,
    pub started_at: String,
    pub failure: Option<String>,
}

/// A failed run's instance kept up for debugging.
#[derive(Debug, Clone, Serialize)]
pub struct HeldInstance {
    pub run_id: RunId,
    pub instance_id: String,
    pub held_until: String,
    /// The Session Manager command that opens a shell on it.
    pub connect: String,
    pub failed_steps: Vec<String>,
    pub log_location: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PriceBasis {
    pub as_of: String,
    pub basis: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub cluster: String,
    /// Who deployed it, when they said.
    pub requested_by: Option<String>,
    pub profile: Option<String>,
    pub stack_status: String,
    pub version: Option<String>,
    pub created_at: Option<String>,
    pub age_minutes: Option<i64>,
    /// The earliest destroy schedule, and who made it.
    pub time_to_destroy: Option<String>,
    pub destroy_requested_by: Option<String>,
    pub cost_per_hour_usd: Option<f64>,
    pub cost_so_far_usd: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    #[serde(flatten)]
    pub run: RunView,
    pub state: String,
    pub steps_done: usize,
    pub steps_total: usize,
    pub current_step: Option<String>,
    pub instance_type: Option<String>,
    pub age_minutes: i64,
    pub cost_so_far_usd: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecentRun {
    #[serde(flatten)]
    pub run: RunView,
    pub state: String,
    pub failed_steps: Vec<String>,
    pub ended_at: Option<String>,
    pub minutes: Option<i64>,
}

// Both read as the run they are about.
impl std::ops::Deref for RunStatus {
    type Target = RunView;
    fn deref(&self) -> &RunView {
        &self.run
    }
}

impl std::ops::Deref for RecentRun {
    type Target = RunView;
    fn deref(&self) -> &RunView {
        &self.run
    }
}

fn minutes_between(from: Timestamp, to: Timestamp) -> i64 {
    to.duration_since(from).as_mins().max(0)
}

fn cents(usd: f64) -> f64 {
    (usd * 100.0).round() / 100.0
}

impl Operations {
    /// STATUS: every cluster, active run, recent run, and what the sweeper would do; or, for
    /// `cluster`, that cluster's alone (none, if it does not run) with its history.
    pub async fn status(&self) -> Result<StatusResponse> {
        self.status_of_cluster(None).await
    }

    pub async fn status_of_cluster(&self, cluster: Option<ClusterName>) -> Result<StatusResponse> {
        let Some(cluster) = cluster else {
            let survey = self.survey().await?;
            return Ok(status_of(&self.provisioner.catalog, &survey, &|instance| {
                self.runner.connect_command(instance)
            }));
        };
        self.provisioner.catalog.profile_for(&cluster)?;
        let now = self.provisioner.ports.clock.now();
        let of_cluster = EndedRuns { cluster: Some(cluster.clone()), kind: None };
        let (survey, history) =
            tokio::join!(self.survey_of(&of_cluster), self.provisioner.ports.history.of(&cluster, now, HISTORY_SHOWN));
        let mut survey = survey?;
        // The budget counts every cluster of the profile: before the survey is narrowed to one.
        let profile = self.provisioner.catalog.profile_for(&cluster)?.name.clone();
        let mut budgets = survey.spend(&self.provisioner.catalog);
        budgets.retain(|spend| spend.profile == profile);
        let name = cluster.as_str();
        survey.stacks.retain(|stack| stack_cluster(&stack.name).is_some_and(|c| c.as_str() == name));
        survey.schedules.retain(|s| scheduled_cluster(&s.name) == Some(name));
        survey.runs.retain(|run| run.cluster == cluster);
        survey.last_image_run = survey.last_image_run.filter(|run| run.cluster == cluster);
        let runs: std::collections::BTreeSet<String> = survey.runs.iter().map(|r| r.run_id.to_string()).collect();
        survey.instances.retain(|i| i.tag(crate::domain::tags::RUN_ID).is_some_and(|id| runs.contains(id)));
        let mut status =
            status_of(&self.provisioner.catalog, &survey, &|instance| self.runner.connect_command(instance));
        status.history = Some(history?);
        status.budgets = budgets;
        Ok(status)
    }
}

/// The status report of `survey`; `connect` says how to reach a held instance.
pub fn status_of(catalog: &Catalog, survey: &Survey, connect: &dyn Fn(&str) -> String) -> StatusResponse {
    let prices = catalog.prices();
    let mut clusters: Vec<ClusterStatus> =
        survey.stacks.iter().map(|stack| cluster_status(catalog, survey, stack)).collect();
    clusters.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    StatusResponse {
        status: "success",
        at: crate::domain::time::whole_seconds(survey.now).to_string(),
        clusters,
        runs: active_runs(prices, survey),
        recent_runs: recent_runs(survey),
        held: held_instances(survey, connect),
        sweeper: findings(catalog, survey),
        history: None,
        budgets: survey.spend(catalog),
        prices: PriceBasis { as_of: prices.as_of.clone(), basis: prices.basis.clone() },
        runner_images: runner_images(catalog, survey),
        launch_errors: launch_errors(&survey.launch_events, survey.now),
        boot_times: boot_times(&survey.launch_events, survey.now),
        last_image_refresh: (survey.runs.iter().chain(&survey.last_image_run))
            .filter(|run| run.kind == RunKind::RunnerImage)
            .max_by_key(|run| run.started_at)
            .map(|run| ImageRefresh {
                run_id: run.run_id.clone(),
                state: run.state.as_str(),
                started_at: run.started_at.to_string(),
                failure: run.failure.clone(),
            }),
    }
}

fn runner_images(catalog: &Catalog, survey: &Survey) -> Vec<RunnerImageStatus> {
    let hash = catalog.plans().runner_image.hash();
    let held: Vec<String> = catalog
        .plans()
        .runner_image
        .steps
        .iter()
        .filter(|step| step.image == Some(crate::instance::ImageRole::Holds))
        .map(|step| step.name.clone())
        .collect();
    let mut images: Vec<RunnerImageStatus> = survey
        .runner_images
        .iter()
        .map(|image| RunnerImageStatus {
            image_id: image.id.clone(),
            architecture: image.architecture.clone(),
            state: image.state.clone(),
            created_at: image.created_at.map(|at| at.to_string()),
            age_days: image
                .created_at
                .map(|at| (survey.now.duration_since(at).as_secs_f64().max(0.0) / 86_400.0 * 10.0).round() / 10.0),
            plan_hash: image.plan_hash.clone(),
            current_plan: image.plan_hash == hash,
            run_id: image.run_id.clone(),
            holds: if image.plan_hash == hash { held.clone() } else { Vec::new() },
            build_image: image.build_image.clone(),
            build_image_digest: image.holds.build_image_digest.clone(),
            tools: image.holds.tools.clone(),
        })
        .collect();
    images.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    images
}

fn cluster_status(catalog: &Catalog, survey: &Survey, stack: &StackSnapshot) -> ClusterStatus {
    let cluster = stack_cluster(&stack.name);
    let profile = cluster.as_ref().and_then(|c| catalog.profile_for(c).ok());
    let per_hour = profile.and_then(|p| p.hourly_cost(&stack.parameters, catalog.prices()));
    let age = stack.created_at.map(|created| survey.now.duration_since(created));
    let hours = age.map(|age| age.as_secs_f64().max(0.0) / 3600.0);
    let name = cluster.as_ref().map_or_else(|| stack.name.clone(), ToString::to_string);
    let first = survey.first_destroy_schedule(&name);
    ClusterStatus {
        requested_by: stack.tags.get(crate::domain::tags::REQUESTED_BY).cloned(),
        time_to_destroy: first.map(|s| s.at.to_string()),
        destroy_requested_by: first.and_then(|s| s.requested_by.clone()),
        cluster: name,
        profile: profile.map(|p| p.name.clone()),
        stack_status: stack.status.to_string(),
        version: stack.parameters.get("Version").cloned(),
        created_at: stack.created_at.map(|t| t.to_string()),
        age_minutes: age.map(|age| age.as_mins().max(0)),
        cost_per_hour_usd: per_hour.map(cents),
        cost_so_far_usd: per_hour.zip(hours).map(|(rate, hours)| cents(rate * hours)),
    }
}

/// Active runs, oldest first, with their instance and its cost so far.
fn active_runs(prices: &Prices, survey: &Survey) -> Vec<RunStatus> {
    let now = survey.now;
    let instances: BTreeMap<&str, &TaggedInstance> = survey.instances.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut active: Vec<&RunRecord> = survey.runs.iter().filter(|run| !run.state.ended()).collect();
    active.sort_by_key(|run| (run.started_at, run.run_id.to_string()));
    active
        .into_iter()
        .map(|run| {
            let instance = run.instance_id.as_deref().and_then(|id| instances.get(id));
            let cost = instance.and_then(|i| {
                let hours = now.duration_since(i.launched_at.unwrap_or(run.started_at)).as_secs_f64().max(0.0) / 3600.0;
                prices.hourly(&i.instance_type).map(|rate| cents(rate * hours))
            });
            let current = run
                .steps
                .iter()
                .find(|s| s.status == StepStatus::Running)
                .or_else(|| run.steps.iter().find(|s| s.status == StepStatus::Pending));
            RunStatus {
                run: run.view(),
                state: run.state.as_str().to_owned(),
                steps_done: run
                    .steps
                    .iter()
                    .filter(|s| !matches!(s.status, StepStatus::Pending | StepStatus::Running))
                    .count(),
                steps_total: run.steps.len(),
                current_step: current.map(|s| s.name.clone()),
                instance_type: instance.map(|i| i.instance_type.clone()),
                age_minutes: minutes_between(run.started_at, now),
                cost_so_far_usd: cost,
            }
        })
        .collect()
}

/// The instances failed runs hold at the survey's time, the soonest to go first.
fn held_instances(survey: &Survey, connect: &dyn Fn(&str) -> String) -> Vec<HeldInstance> {
    let mut held: Vec<(&RunRecord, &str, Timestamp)> = survey
        .runs
        .iter()
        .filter(|run| run.held_at(survey.now))
        .filter_map(|run| Some((run, run.instance_id.as_deref()?, run.held_until?)))
        .collect();
    held.sort_by_key(|(run, _, until)| (*until, run.run_id.to_string()));
    held.into_iter()
        .map(|(run, instance, until)| HeldInstance {
            run_id: run.run_id.clone(),
            instance_id: instance.to_owned(),
            held_until: until.to_string(),
            connect: connect(instance),
            failed_steps: run.failed_steps().into_iter().map(str::to_owned).collect(),
            log_location: run.log_location.clone(),
        })
        .collect()
}

/// The last [`RECENT_RUNS`] ended runs, newest first.
fn recent_runs(survey: &Survey) -> Vec<RecentRun> {
    let mut ended: Vec<&RunRecord> = survey.recent.iter().collect();
    ended.sort_by_key(|run| std::cmp::Reverse((run.ended_at.unwrap_or(run.started_at), run.run_id.to_string())));
    ended
        .into_iter()
        .take(RECENT_RUNS)
        .map(|run| RecentRun {
            run: run.view(),
            state: run.state.as_str().to_owned(),
            failed_steps: run.failed_steps().into_iter().map(str::to_owned).collect(),
            ended_at: run.ended_at.map(|t| crate::domain::time::whole_seconds(t).to_string()),
            minutes: run.ended_at.map(|end| minutes_between(run.started_at, end)),
        })
        .collect()
}
