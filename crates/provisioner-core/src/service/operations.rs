//! Keeping watch: the sweeper (`sweep`), which ends what was left behind, and the status report
//! (`status`). Both start from one survey of the account (four listing calls) and the same rules
//! ([`findings`]): status shows what the sweeper would do, the sweeper does it.
//!
//! The sweeper's rules:
//! - a provisioner-tagged instance is terminated when its run's time limit (its expiry tag)
//!   passed, its run ended, its run does not exist (after the launch grace), or it is a second
//!   instance of a run that runs on another;
//! - an active run is resumed (as a waiting `test`/`build` would: ended as `RunLost` when its
//!   instance is gone, given an instance found by its tag, concluded when it reported) when it
//!   reported, passed its time limit, lost its instance, or has none recorded after the grace;
//! - a cluster is destroyed, through `destroy` under its lock, when its destroy schedule is
//!   overdue, or when it is older than its profile's maximum lifetime and has no schedule.
//!
//! What the rules notice but leave alone (a stack no profile matches, a failed delete) is reported.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::run::{Runner, LAUNCH_GRACE};
use super::{alert, scheduled_cluster, Invocation, Provisioner, DESTROY_SCHEDULE_PREFIX};
use crate::catalog::{Catalog, STACK_NAME_PREFIX};
use crate::domain::run::{EXPIRES_TAG, RUN_ID_TAG};
use crate::domain::{ClusterName, ClusterRequest, RunId, RunRecord, StackPhase, StepResult, StepStatus};
use crate::error::Result;
use crate::ports::{ScheduleEntry, StackSnapshot, TaggedInstance};

/// A destroy schedule this long past its time whose cluster still exists failed (its retries and
/// dead-letter queue take less): the sweeper destroys the cluster.
pub const OVERDUE_AFTER: SignedDuration = SignedDuration::from_mins(30);
/// How many ended runs status lists.
pub const RECENT_RUNS: usize = 10;

/// Both sides of the provisioner: the sweeper destroys through the provisioner and resumes runs
/// through the runner.
#[derive(Clone)]
pub struct Operations {
    pub provisioner: Provisioner,
    pub runner: Runner,
}

/// What the account holds, as four listing calls saw it.
#[derive(Debug, Clone)]
pub struct Survey {
    pub now: Timestamp,
    pub stacks: Vec<StackSnapshot>,
    pub schedules: Vec<ScheduleEntry>,
    pub runs: Vec<RunRecord>,
    pub instances: Vec<TaggedInstance>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepAction {
    TerminateInstance,
    ResumeRun,
    DestroyCluster,
    /// Noticed and left alone: someone should look.
    Report,
}

impl SweepAction {
    /// The metric that counts it.
    fn metric(self) -> &'static str {
        match self {
            SweepAction::TerminateInstance => "InstancesTerminated",
            SweepAction::ResumeRun => "RunsResumed",
            SweepAction::DestroyCluster => "ClustersDestroyed",
            SweepAction::Report => "Reported",
        }
    }
}

/// One thing the sweeper does (or, in status, would do).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub action: SweepAction,
    /// An instance id, a run id or a cluster name.
    pub target: String,
    pub reason: String,
}

/// A finding acted on, and how that went.
#[derive(Debug, Clone, Serialize)]
pub struct SweptAction {
    #[serde(flatten)]
    pub finding: Finding,
    pub result: String,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepResponse {
    pub status: &'static str,
    /// What was done, one entry per finding; empty when nothing was wrong.
    pub actions: Vec<SweptAction>,
    pub surveyed: Surveyed,
    pub elapsed_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Surveyed {
    pub clusters: usize,
    pub schedules: usize,
    pub active_runs: usize,
    pub instances: usize,
}

/// The cluster a stack holds, when its name is one of ours.
fn cluster_of(stack: &StackSnapshot) -> Option<ClusterName> {
    ClusterName::parse(stack.name.strip_prefix(STACK_NAME_PREFIX)?).ok()
}

impl Survey {
    /// When the first destroy schedule of `cluster` fires.
    fn first_destroy(&self, cluster: &str) -> Option<Timestamp> {
        self.schedules.iter().filter(|s| scheduled_cluster(&s.name) == Some(cluster)).map(|s| s.at).min()
    }
}

/// Every finding of the sweeper's rules (see the module's text) on `survey`, in a stable order.
pub fn findings(catalog: &Catalog, survey: &Survey) -> Vec<Finding> {
    let now = survey.now;
    let mut found = Vec::new();
    let mut finding = |action, target: &str, reason: String| {
        found.push(Finding { action, target: target.to_owned(), reason });
    };
    let runs: BTreeMap<&str, &RunRecord> = survey.runs.iter().map(|run| (run.run_id.as_str(), run)).collect();
    let live: BTreeSet<&str> = survey.instances.iter().map(|instance| instance.id.as_str()).collect();

    for instance in &survey.instances {
        let id = instance.id.as_str();
        let past_grace = instance.launched_at.is_none_or(|at| at + LAUNCH_GRACE <= now);
        let expired = instance.tag(EXPIRES_TAG).and_then(|t| t.parse::<Timestamp>().ok()).filter(|at| *at <= now);
        let run_id = instance.tag(RUN_ID_TAG);
        let reason = match (run_id, run_id.and_then(|r| runs.get(r))) {
            _ if expired.is_some() => expired.map(|at| format!("its run's time limit passed at {at}")),
            (None, _) if past_grace => Some("it carries no run id".to_owned()),
            (Some(run_id), None) if past_grace => Some(format!("its run {run_id} does not exist")),
            (Some(run_id), Some(run)) if run.state.ended() => {
                Some(format!("its run {run_id} ended as {}", run.state.as_str()))
            }
            (Some(run_id), Some(run)) if run.instance_id.as_deref().is_some_and(|kept| kept != id) => Some(format!(
                "it is a second instance of run {run_id}, which runs on {}",
                run.instance_id.as_deref().unwrap_or_default()
            )),
            _ => None,
        };
        if let Some(reason) = reason {
            finding(SweepAction::TerminateInstance, id, reason);
        }
    }

    for run in survey.runs.iter().filter(|run| !run.state.ended()) {
        let reason = if run.outcome.is_some() {
            Some("it reported its outcome and nobody concluded it".to_owned())
        } else if run.deadline <= now {
            Some(format!("it passed its time limit at {}", run.deadline))
        } else {
            match &run.instance_id {
                Some(instance) if !live.contains(instance.as_str()) => Some(format!("its instance {instance} is gone")),
                None if run.started_at + LAUNCH_GRACE <= now => {
                    Some("it has no instance recorded since its launch".to_owned())
                }
                _ => None,
            }
        };
        if let Some(reason) = reason {
            finding(SweepAction::ResumeRun, run.run_id.as_str(), reason);
        }
    }

    for stack in &survey.stacks {
        let Some(cluster) = cluster_of(stack) else {
            finding(SweepAction::Report, &stack.name, "its name is not a valid cluster name; left alone".into());
            continue;
        };
        let Ok(profile) = catalog.profile_for(&cluster) else {
            finding(SweepAction::Report, cluster.as_str(), "no profile of the catalog matches it; left alone".into());
            continue;
        };
        let phase = stack.status.phase();
        if phase == StackPhase::Deleting {
            continue;
        }
        let first_schedule = survey.first_destroy(cluster.as_str());
        let too_old = |max: SignedDuration| stack.created_at.is_some_and(|created| created + max <= now);
        let reason = match (first_schedule, profile.max_ttl) {
            (Some(at), _) if at + OVERDUE_AFTER <= now => {
                Some(format!("its destroy was due at {at} and it still exists"))
            }
            (None, Some(max)) if too_old(max) => Some(format!(
                "it is older than the '{}' profile's maximum lifetime of {} minutes and has no destroy schedule",
                profile.name,
                max.as_mins()
            )),
            _ => None,
        };
        match reason {
            Some(reason) => finding(SweepAction::DestroyCluster, cluster.as_str(), reason),
            None if stack.status.as_str() == "DELETE_FAILED" => finding(
                SweepAction::Report,
                cluster.as_str(),
                "its last destroy failed (DELETE_FAILED); remove what blocks the delete and destroy it again".into(),
            ),
            None => {}
        }
    }
    found.sort();
    found
}

impl Operations {
    /// The survey: four listings, made together.
    pub async fn survey(&self) -> Result<Survey> {
        let (stacks, schedules, runs, instances) = tokio::join!(
            self.provisioner.stacks.list(STACK_NAME_PREFIX),
            self.provisioner.schedules.list(DESTROY_SCHEDULE_PREFIX),
            self.runner.runs.list(),
            self.runner.instances.tagged(),
        );
        Ok(Survey {
            now: self.provisioner.clock.now(),
            stacks: stacks?,
            schedules: schedules?,
            runs: runs?,
            instances: instances?,
        })
    }

    /// SWEEP: acts on every finding, reports what it did as one event, one metric line and (when
    /// it acted) one alert. Idempotent: what one sweep fixed, the next finds fixed.
    pub async fn sweep(&self, invocation: &Invocation) -> Result<SweepResponse> {
        let started = self.provisioner.clock.now();
        let survey = self.survey().await?;
        let found = findings(&self.provisioner.catalog, &survey);
        let mut actions = Vec::new();
        let mut destroys = Vec::new();
        for finding in found {
            match finding.action {
                SweepAction::TerminateInstance => {
                    let outcome = self.runner.instances.terminate(&finding.target).await;
                    actions.push(swept(finding, outcome.map(|()| "terminated".to_owned())));
                }
                SweepAction::ResumeRun => {
                    let outcome = self.resume(&survey, &finding.target).await;
                    actions.push(swept(finding, outcome));
                }
                SweepAction::DestroyCluster => destroys.push(async move {
                    let outcome = match ClusterName::parse(&finding.target) {
                        Ok(cluster) => self.provisioner.destroy(ClusterRequest { cluster }, invocation).await,
                        Err(error) => Err(error),
                    };
                    swept(finding, outcome.map(|response| format!("destroyed ({:?})", response.action)))
                }),
                SweepAction::Report => actions.push(SweptAction { finding, result: "reported".into(), ok: true }),
            }
        }
        // Together, in this task: each may wait up to the spec's 10 minutes.
        actions.extend(futures::future::join_all(destroys).await);
        actions.sort_by(|a, b| a.finding.cmp(&b.finding));
        self.report(&actions).await;
        let response = SweepResponse {
            status: "success",
            surveyed: Surveyed {
                clusters: survey.stacks.len(),
                schedules: survey.schedules.len(),
                active_runs: survey.runs.iter().filter(|r| !r.state.ended()).count(),
                instances: survey.instances.len(),
            },
            actions,
            elapsed_seconds: super::seconds_between(started, self.provisioner.clock.now()),
        };
        Ok(response)
    }

    /// Resumes a run as a waiting invocation would, and says where it stands after.
    async fn resume(&self, survey: &Survey, run_id: &str) -> Result<String> {
        let Some(mut record) = survey.runs.iter().find(|run| run.run_id.as_str() == run_id).cloned() else {
            return Ok("the run is gone".into());
        };
        let before = record.instance_id.clone();
        self.runner.check_progress(&mut record).await?;
        Ok(if record.state.ended() {
            format!("ended as {}", record.state.as_str())
        } else if record.instance_id != before {
            format!("adopted instance {}", record.instance_id.as_deref().unwrap_or_default())
        } else {
            "still running".to_owned()
        })
    }

    /// One structured event, one metric line, and an alert when the sweep acted.
    async fn report(&self, actions: &[SweptAction]) {
        let counts: Vec<(&str, usize)> =
            [SweepAction::TerminateInstance, SweepAction::ResumeRun, SweepAction::DestroyCluster, SweepAction::Report]
                .into_iter()
                .map(|kind| (kind.metric(), actions.iter().filter(|a| a.finding.action == kind).count()))
                .collect();
        crate::metrics::sweep(&counts);
        let listed = serde_json::to_string(actions).unwrap_or_default();
        tracing::info!(actions = actions.len(), failed = actions.iter().filter(|a| !a.ok).count(), detail = %listed, "sweep");
        // What is only reported stays as it is and would repeat every sweep: it alerts with an action.
        if actions.iter().all(|a| a.finding.action == SweepAction::Report) {
            return;
        }
        let lines: Vec<String> = actions
            .iter()
            .map(|a| format!("- {:?} {}: {} -> {}", a.finding.action, a.finding.target, a.finding.reason, a.result))
            .collect();
        let subject = format!("SlideRule provisioner: the sweeper acted on {} thing(s)", actions.len());
        alert(&*self.provisioner.notices, &subject, &lines.join("\n")).await;
    }
}

fn swept(finding: Finding, outcome: Result<String>) -> SweptAction {
    match outcome {
        Ok(result) => SweptAction { finding, result, ok: true },
        Err(error) => SweptAction { finding, result: format!("failed: {error} ({})", error.code()), ok: false },
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusResponse {
    pub status: &'static str,
    pub at: String,
    pub clusters: Vec<ClusterStatus>,
    /// Active runs, oldest first.
    pub runs: Vec<RunStatus>,
    /// The last ended runs, newest first.
    pub recent_runs: Vec<RecentRun>,
    /// What the next sweep would act on.
    pub sweeper: Vec<Finding>,
    /// Where the costs come from.
    pub prices: PriceBasis,
}

#[derive(Debug, Clone, Serialize)]
pub struct PriceBasis {
    pub as_of: String,
    pub basis: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub cluster: String,
    pub profile: Option<String>,
    pub stack_status: String,
    pub version: Option<String>,
    pub created_at: Option<String>,
    pub age_minutes: Option<i64>,
    /// The earliest destroy schedule.
    pub time_to_destroy: Option<String>,
    pub cost_per_hour_usd: Option<f64>,
    pub cost_so_far_usd: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub run_id: RunId,
    pub kind: String,
    pub cluster: String,
    pub version: String,
    pub state: String,
    pub steps_done: usize,
    pub steps_total: usize,
    pub current_step: Option<String>,
    pub instance_id: Option<String>,
    pub instance_type: Option<String>,
    pub age_minutes: i64,
    pub cost_so_far_usd: Option<f64>,
    pub steps: Vec<StepResult>,
    pub log_location: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecentRun {
    pub run_id: RunId,
    pub kind: String,
    pub cluster: String,
    pub version: String,
    pub state: String,
    pub failed_steps: Vec<String>,
    pub ended_at: Option<String>,
    pub minutes: Option<i64>,
    pub log_location: String,
    pub steps: Vec<StepResult>,
}

fn minutes_between(from: Timestamp, to: Timestamp) -> i64 {
    to.duration_since(from).as_mins().max(0)
}

fn cents(usd: f64) -> f64 {
    (usd * 100.0).round() / 100.0
}

impl Operations {
    /// STATUS: every cluster, active run, recent run, and what the sweeper would do.
    pub async fn status(&self) -> Result<StatusResponse> {
        let survey = self.survey().await?;
        Ok(status_of(&self.provisioner.catalog, &survey))
    }
}

/// The status report of `survey`.
pub fn status_of(catalog: &Catalog, survey: &Survey) -> StatusResponse {
    let now = survey.now;
    let prices = catalog.prices();
    let mut clusters: Vec<ClusterStatus> = survey
        .stacks
        .iter()
        .map(|stack| {
            let cluster = cluster_of(stack);
            let profile = cluster.as_ref().and_then(|c| catalog.profile_for(c).ok());
            let per_hour = profile.and_then(|p| p.hourly_cost(&stack.parameters, prices));
            let age = stack.created_at.map(|created| now.duration_since(created));
            let hours = age.map(|age| age.as_secs_f64().max(0.0) / 3600.0);
            let name = cluster.as_ref().map_or_else(|| stack.name.clone(), ToString::to_string);
            ClusterStatus {
                time_to_destroy: survey.first_destroy(&name).map(|at| at.to_string()),
                cluster: name,
                profile: profile.map(|p| p.name.clone()),
                stack_status: stack.status.to_string(),
                version: stack.parameters.get("Version").cloned(),
                created_at: stack.created_at.map(|t| t.to_string()),
                age_minutes: age.map(|age| age.as_mins().max(0)),
                cost_per_hour_usd: per_hour.map(cents),
                cost_so_far_usd: per_hour.zip(hours).map(|(rate, hours)| cents(rate * hours)),
            }
        })
        .collect();
    clusters.sort_by(|a, b| a.cluster.cmp(&b.cluster));

    let instances: BTreeMap<&str, &TaggedInstance> = survey.instances.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut active: Vec<&RunRecord> = survey.runs.iter().filter(|run| !run.state.ended()).collect();
    active.sort_by_key(|run| (run.started_at, run.run_id.to_string()));
    let runs = active
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
                run_id: run.run_id.clone(),
                kind: run.kind.to_string(),
                cluster: run.cluster.to_string(),
                version: run.version.to_string(),
                state: run.state.as_str().to_owned(),
                steps_done: run
                    .steps
                    .iter()
                    .filter(|s| !matches!(s.status, StepStatus::Pending | StepStatus::Running))
                    .count(),
                steps_total: run.steps.len(),
                current_step: current.map(|s| s.name.clone()),
                instance_id: run.instance_id.clone(),
                instance_type: instance.map(|i| i.instance_type.clone()),
                age_minutes: minutes_between(run.started_at, now),
                cost_so_far_usd: cost,
                steps: run.steps.clone(),
                log_location: run.log_location.clone(),
            }
        })
        .collect();

    let mut ended: Vec<&RunRecord> = survey.runs.iter().filter(|run| run.state.ended()).collect();
    ended.sort_by_key(|run| std::cmp::Reverse((run.ended_at.unwrap_or(run.started_at), run.run_id.to_string())));
    let recent_runs = ended
        .into_iter()
        .take(RECENT_RUNS)
        .map(|run| RecentRun {
            run_id: run.run_id.clone(),
            kind: run.kind.to_string(),
            cluster: run.cluster.to_string(),
            version: run.version.to_string(),
            state: run.state.as_str().to_owned(),
            failed_steps: run.failed_steps().into_iter().map(str::to_owned).collect(),
            ended_at: run.ended_at.map(|t| crate::domain::time::whole_seconds(t).to_string()),
            minutes: run.ended_at.map(|end| minutes_between(run.started_at, end)),
            log_location: run.log_location.clone(),
            steps: run.steps.clone(),
        })
        .collect();

    StatusResponse {
        status: "success",
        at: crate::domain::time::whole_seconds(now).to_string(),
        clusters,
        runs,
        recent_runs,
        sweeper: findings(catalog, survey),
        prices: PriceBasis { as_of: prices.as_of.clone(), basis: prices.basis.clone() },
    }
}
