//! SWEEP: ends what was left behind. It starts from one survey of the account (`survey.rs`) and
//! applies pure rules ([`findings`]): status shows what the sweeper would do, the sweeper does it.
//!
//! The sweeper's rules:
//! - a run's or image run's instance (never a cluster's: those go with their stack) is terminated
//!   when its run's time limit (its expiry tag) passed, its run ended (a failed run's held
//!   instance once its hold ended), its run does not exist (after the launch grace), or it is a
//!   second instance of a run that runs on another;
//! - an active run is resumed (as a waiting `test`/`build` would: its next attempt begun when the
//!   cloud ended the current one, given an instance found by its tag, concluded when it reported)
//!   when it reported, passed its attempt's time limit, lost its instance, has none recorded after
//!   the grace, received a spot interruption notice, or did not check in by its boot deadline;
//! - a cluster is destroyed, through `destroy` under its lock, when its destroy schedule is
//!   overdue, or when it is older than its profile's maximum lifetime and has no schedule;
//! - 30 minutes before a running cluster's destroy schedule fires, whoever made the schedule
//!   (and the alert topic) is warned, once per schedule: a reschedule is warned again;
//! - when a profile's estimated spend this month reaches 80 % and then 100 % of its budget, the
//!   alert topic is told, once a month per level (`budget.rs`);
//! - once a day, each profile's books are recounted from the records (stacks, the month's
//!   history, the runs: the one full read of the table); a difference is corrected, and reported
//!   in the answer's `recounts` and by an alert (`budget.rs`); and the live runs whose start
//!   failed before it wrote their record are taken out of the live runs;
//! - a profile's slot is freed when its run ended, or had no record [`super::run::SLOT_LEASE`]
//!   after its start (the start crashed): a leaked slot is reclaimed within one sweep;
//! - runner images beyond the newest two per architecture, and failed ones, are deregistered with
//!   their snapshots, never one an active run launches from ([`crate::domain::runner_image::to_retire`]).
//!
//! What the rules notice but leave alone (a stack no profile matches, a failed delete) is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jiff::{SignedDuration, Timestamp};
use serde::{Serialize, Serializer};

use super::recount::Recount;
use super::run::{slot_abandoned, LAUNCH_GRACE};
use super::survey::{Operations, Survey};
use super::{alert, Invocation};
use crate::catalog::Catalog;
use crate::domain::books::RECOUNT_EVERY;
use crate::domain::history::start_of_month;
use crate::domain::resource_names::stack_cluster;
use crate::domain::runner_image::{to_retire, KEPT_PER_ARCHITECTURE};
use crate::domain::{
    tags, ClusterName, ClusterRequest, HistoryEntry, OnceNotice, RequestedBy, RunId, RunRecord, StackPhase,
};
use crate::error::Result;
use crate::ports::{StackSnapshot, TaggedInstance};

/// Who the sweeper's destroys are requested by, in the clusters' histories.
pub const SWEEPER: &str = "sweeper";

/// How long before a destroy schedule fires whoever made it is warned.
pub const WARN_BEFORE: SignedDuration = SignedDuration::from_mins(30);

/// A destroy schedule this long past its time whose cluster still exists failed (its retries and
/// dead-letter queue take less): the sweeper destroys the cluster.
pub const OVERDUE_AFTER: SignedDuration = SignedDuration::from_mins(30);
/// How long after its start a live run with no record is taken for a start that failed between
/// its two writes (they are a moment apart; the start's checks come before both).
const UNRECORDED_LIVE_GRACE: SignedDuration = SignedDuration::from_hours(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepAction {
    TerminateInstance,
    ResumeRun,
    DestroyCluster,
    /// Tell whoever scheduled a destroy that it fires soon.
    WarnDestroy,
    /// Tell the alert topic a profile's spend reached 80 % or 100 % of its budget (once a month each).
    AlertBudget,
    /// Deregister a runner image no run will launch from, and delete its snapshots.
    RetireImage,
    /// Free a profile's slot its run no longer holds (ended, or a start that crashed).
    FreeSlot,
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
            SweepAction::WarnDestroy => "DestroysWarned",
            SweepAction::AlertBudget => "BudgetAlerts",
            SweepAction::RetireImage => "ImagesRetired",
            SweepAction::FreeSlot => "SlotsFreed",
            SweepAction::Report => "Reported",
        }
    }
}

/// One thing the sweeper does (or, in status, would do).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub action: SweepAction,
    pub target: Target,
    pub reason: String,
}

/// What a finding is about, as its rule found it; it answers as its id or name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Instance(String),
    Run(RunId),
    Cluster(ClusterName),
    /// A stack whose name is no cluster's.
    Stack(String),
    /// A profile of the catalog.
    Profile(String),
    /// A runner image (AMI).
    Image(String),
}

impl Target {
    pub fn as_str(&self) -> &str {
        match self {
            Target::Instance(id) | Target::Stack(id) | Target::Profile(id) | Target::Image(id) => id,
            Target::Run(run_id) => run_id.as_str(),
            Target::Cluster(cluster) => cluster.as_str(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// By id or name, as the sweeper lists its findings.
impl Ord for Target {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str()).then_with(|| self.rank().cmp(&other.rank()))
    }
}

impl PartialOrd for Target {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Target {
    fn rank(&self) -> u8 {
        match self {
            Target::Instance(_) => 0,
            Target::Run(_) => 1,
            Target::Cluster(_) => 2,
            Target::Stack(_) => 3,
            Target::Profile(_) => 4,
            Target::Image(_) => 5,
        }
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
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
    /// The profiles' books recounted from the records by this sweep (once a day each).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recounts: Vec<Recount>,
    pub elapsed_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Surveyed {
    pub clusters: usize,
    pub schedules: usize,
    pub active_runs: usize,
    pub instances: usize,
}

/// Every finding of the sweeper's rules (see the module's text) on `survey`, in a stable order.
pub fn findings(catalog: &Catalog, survey: &Survey) -> Vec<Finding> {
    let mut found = instance_findings(survey);
    found.extend(run_findings(survey));
    found.extend(warning_findings(survey));
    found.extend(budget_findings(catalog, survey));
    found.extend(image_findings(survey));
    found.extend(slot_findings(survey));
    found.extend(survey.stacks.iter().filter_map(|stack| stack_finding(catalog, survey, stack)));
    found.sort();
    found
}

/// Instances to terminate: expired, of an ended or unknown run, or a run's second instance.
fn instance_findings(survey: &Survey) -> Vec<Finding> {
    let runs: BTreeMap<&str, &RunRecord> = survey.runs.iter().map(|run| (run.run_id.as_str(), run)).collect();
    survey
        .instances
        .iter()
        .filter_map(|instance| {
            let reason = why_terminate(instance, &runs, survey.now)?;
            Some(Finding {
                action: SweepAction::TerminateInstance,
                target: Target::Instance(instance.id.clone()),
                reason,
            })
        })
        .collect()
}

fn why_terminate(instance: &TaggedInstance, runs: &BTreeMap<&str, &RunRecord>, now: Timestamp) -> Option<String> {
    // Only a run's or an image run's instance: a cluster's goes with its stack, whatever its tags
    // (the listing already leaves them out; this holds whatever lists them).
    if instance.run_kind().is_none() || instance.stack().is_some() {
        return None;
    }
    let past_grace = instance.launched_at.is_none_or(|at| at + LAUNCH_GRACE <= now);
    let expired = instance.tag(tags::EXPIRES).and_then(|t| t.parse::<Timestamp>().ok()).filter(|at| *at <= now);
    let run_id = instance.tag(tags::RUN_ID);
    match (run_id, run_id.and_then(|r| runs.get(r))) {
        _ if expired.is_some() => expired.map(|at| format!("its run's time limit passed at {at}")),
        // A failed run's instance, kept for debugging until its hold ends.
        (Some(_), Some(run)) if run.held_at(now) && run.instance_id.as_deref() == Some(instance.id.as_str()) => None,
        (Some(run_id), Some(run)) if run.state.ended() && run.instance_id.as_deref() == Some(instance.id.as_str()) => {
            let hold = run.held_until.map(|at| format!(" and its hold ended at {at}")).unwrap_or_default();
            Some(format!("its run {run_id} ended as {}{hold}", run.state.as_str()))
        }
        (None, _) if past_grace => Some("it carries no run id".to_owned()),
        (Some(run_id), None) if past_grace => Some(format!("its run {run_id} does not exist")),
        (Some(run_id), Some(run)) if run.state.ended() => {
            Some(format!("its run {run_id} ended as {}", run.state.as_str()))
        }
        (Some(run_id), Some(run)) if run.instance_id.as_deref().is_some_and(|kept| kept != instance.id) => {
            Some(format!(
                "it is a second instance of run {run_id}, which runs on {}",
                run.instance_id.as_deref().unwrap_or_default()
            ))
        }
        _ => None,
    }
}

/// Slots whose run no longer holds them: its run ended, or the start that took it crashed.
fn slot_findings(survey: &Survey) -> Vec<Finding> {
    let runs: BTreeMap<&str, &RunRecord> = survey.runs.iter().map(|run| (run.run_id.as_str(), run)).collect();
    survey
        .slots
        .iter()
        .flat_map(|(slots, holders)| holders.iter().map(move |holder| (slots, holder)))
        .filter_map(|(slots, holder)| {
            let why = slot_abandoned(holder, runs.get(holder.as_str()).copied(), survey.now)?;
            Some(Finding {
                action: SweepAction::FreeSlot,
                target: Target::Run(holder.clone()),
                reason: format!("it holds a slot of the '{}' profile's {} runs and {why}", slots.profile, slots.kind),
            })
        })
        .collect()
}

/// Active runs to resume: reported, past their time limit, without their instance.
fn run_findings(survey: &Survey) -> Vec<Finding> {
    let now = survey.now;
    let live: BTreeSet<&str> = survey.instances.iter().map(|instance| instance.id.as_str()).collect();
    survey
        .runs
        .iter()
        .filter(|run| !run.state.ended())
        .filter_map(|run| {
            let attempt = run.current_attempt();
            let deadline = attempt.map_or(run.deadline, |attempt| attempt.deadline);
            let began = attempt.map_or(run.started_at, |attempt| attempt.started_at);
            let reason = if run.outcome.is_some() {
                "it reported its outcome and nobody concluded it".to_owned()
            } else if deadline <= now {
                format!("it passed its time limit at {deadline}")
            } else if run.interrupted() {
                "its instance received a spot interruption notice".to_owned()
            } else {
                match &run.instance_id {
                    Some(instance) if !live.contains(instance.as_str()) => format!("its instance {instance} is gone"),
                    Some(instance) if run.missed_check_in(now) => {
                        format!("its instance {instance} did not check in by its boot deadline")
                    }
                    None if began + LAUNCH_GRACE <= now => "it has no instance recorded since its launch".to_owned(),
                    _ => return None,
                }
            };
            Some(Finding { action: SweepAction::ResumeRun, target: Target::Run(run.run_id.clone()), reason })
        })
        .collect()
}

/// Profiles whose spend this month reached a level of their budget that alerts.
fn budget_findings(catalog: &Catalog, survey: &Survey) -> Vec<Finding> {
    survey
        .spend(catalog)
        .into_iter()
        .filter(|spend| !spend.alert_levels().is_empty())
        .map(|spend| Finding {
            action: SweepAction::AlertBudget,
            target: Target::Profile(spend.profile.clone()),
            reason: format!(
                "its estimated spend in {} is {:.2} USD, {}% of its {:.2} USD budget",
                spend.month,
                spend.spent_usd,
                spend.percent_of_budget.unwrap_or_default(),
                spend.budget_usd.unwrap_or_default()
            ),
        })
        .collect()
}

/// Runner images to retire: all but the newest two of each architecture, and failed ones; not
/// one an active run launches from.
fn image_findings(survey: &Survey) -> Vec<Finding> {
    let in_use: BTreeSet<String> =
        survey.runs.iter().filter(|run| !run.state.ended()).filter_map(|run| run.runner_image.clone()).collect();
    to_retire(&survey.runner_images, &in_use)
        .into_iter()
        .map(|image| Finding {
            action: SweepAction::RetireImage,
            target: Target::Image(image.id.clone()),
            reason: if image.available() {
                format!(
                    "{} newer {} runner images are kept; it was made {}",
                    KEPT_PER_ARCHITECTURE,
                    image.architecture,
                    image.created_at.map_or("at an unknown time".to_owned(), |at| format!("at {at}"))
                )
            } else {
                format!("it is {}: no run can launch from it", image.state)
            },
        })
        .collect()
}

/// Running clusters whose first destroy schedule fires within [`WARN_BEFORE`].
fn warning_findings(survey: &Survey) -> Vec<Finding> {
    let now = survey.now;
    survey
        .stacks
        .iter()
        .filter(|stack| stack.status.phase() == StackPhase::Running)
        .filter_map(|stack| {
            let cluster = stack_cluster(&stack.name)?;
            let schedule = survey.first_destroy_schedule(cluster.as_str())?;
            if !(schedule.at - WARN_BEFORE <= now && now < schedule.at) {
                return None;
            }
            let minutes = schedule.at.duration_since(now).as_mins();
            let by = schedule.requested_by.as_deref().map(|who| format!(", made by {who}")).unwrap_or_default();
            let reason =
                format!("its destroy schedule {} fires at {} (in {minutes} min{by})", schedule.name, schedule.at);
            Some(Finding { action: SweepAction::WarnDestroy, target: Target::Cluster(cluster), reason })
        })
        .collect()
}

/// A cluster to destroy (its schedule overdue, or past its profile's lifetime with none), or a
/// stack to report (no profile's, not a cluster's, or a failed delete).
fn stack_finding(catalog: &Catalog, survey: &Survey, stack: &StackSnapshot) -> Option<Finding> {
    let report =
        |target: Target, reason: &str| Some(Finding { action: SweepAction::Report, target, reason: reason.into() });
    let Some(cluster) = stack_cluster(&stack.name) else {
        return report(Target::Stack(stack.name.clone()), "its name is not a valid cluster name; left alone");
    };
    let Ok(profile) = catalog.profile_for(&cluster) else {
        return report(Target::Cluster(cluster), "no profile of the catalog matches it; left alone");
    };
    if stack.status.phase() == StackPhase::Deleting {
        return None;
    }
    let now = survey.now;
    let too_old = |max: SignedDuration| stack.created_at.is_some_and(|created| created + max <= now);
    let reason = match (survey.first_destroy(cluster.as_str()), profile.max_ttl) {
        (Some(at), _) if at + OVERDUE_AFTER <= now => format!("its destroy was due at {at} and it still exists"),
        (None, Some(max)) if too_old(max) => format!(
            "it is older than the '{}' profile's maximum lifetime of {} minutes and has no destroy schedule",
            profile.name,
            max.as_mins()
        ),
        _ if stack.status.as_str() == "DELETE_FAILED" => {
            return report(
                Target::Cluster(cluster),
                "its last destroy failed (DELETE_FAILED); remove what blocks the delete and destroy it again",
            );
        }
        _ => return None,
    };
    Some(Finding { action: SweepAction::DestroyCluster, target: Target::Cluster(cluster), reason })
}

impl Operations {
    /// SWEEP: acts on every finding, reports what it did as one event, one metric line and (when
    /// it acted) one alert. Idempotent: what one sweep fixed, the next finds fixed.
    pub async fn sweep(&self, invocation: &Invocation) -> Result<SweepResponse> {
        let started = self.provisioner.ports.clock.now();
        let survey = self.survey().await?;
        self.forget_ended(&survey).await;
        let found = findings(&self.provisioner.catalog, &survey);
        let mut actions = Vec::new();
        let mut destroys = Vec::new();
        for finding in found {
            match (finding.action, finding.target.clone()) {
                (SweepAction::DestroyCluster, Target::Cluster(cluster)) => destroys.push(async move {
                    let request = ClusterRequest { cluster, requested_by: RequestedBy::parse(SWEEPER).ok() };
                    let outcome = self.provisioner.destroy(request, invocation).await;
                    swept(finding, outcome.map(|response| format!("destroyed ({:?})", response.action)))
                }),
                _ => actions.extend(self.act(&survey, finding, invocation).await),
            }
        }
        // Together, in this task: each may wait up to the spec's 10 minutes.
        actions.extend(futures::future::join_all(destroys).await);
        actions.sort_by(|a, b| a.finding.cmp(&b.finding));
        self.report(&actions).await;
        let recounts = self.daily_work(&survey).await;
        let response = SweepResponse {
            status: "success",
            surveyed: Surveyed {
                clusters: survey.stacks.len(),
                schedules: survey.schedules.len(),
                active_runs: survey.runs.iter().filter(|r| !r.state.ended()).count(),
                instances: survey.instances.len(),
            },
            actions,
            recounts,
            elapsed_seconds: super::seconds_between(started, self.provisioner.ports.clock.now()),
        };
        Ok(response)
    }

    /// Acts on one finding that is not a destroy: `None` for a warning or alert another sweep sent
    /// (not an action of this one). Each rule finds its action's kind of target; what is only
    /// reported is left as it is.
    async fn act(&self, survey: &Survey, finding: Finding, invocation: &Invocation) -> Option<SweptAction> {
        let claimant = &invocation.request_id;
        let outcome = match (finding.action, finding.target.clone()) {
            (SweepAction::TerminateInstance, Target::Instance(id)) => {
                self.runner.ports.instances.terminate(&id).await.map(|()| "terminated".to_owned())
            }
            (SweepAction::ResumeRun, Target::Run(run_id)) => self.resume(survey, &run_id).await,
            (SweepAction::WarnDestroy, Target::Cluster(cluster)) => {
                self.warn(survey, &cluster, claimant).await.transpose()?
            }
            (SweepAction::AlertBudget, Target::Profile(profile)) => {
                self.alert_budget(survey, &profile, claimant).await.transpose()?
            }
            (SweepAction::RetireImage, Target::Image(id)) => self.retire_image(survey, &id).await,
            (SweepAction::FreeSlot, Target::Run(holder)) => self.free_slot(survey, &holder).await,
            _ => Ok("reported".into()),
        };
        Some(swept(finding, outcome))
    }

    /// Deregisters a runner image and deletes its snapshots.
    async fn retire_image(&self, survey: &Survey, id: &str) -> Result<String> {
        let Some(image) = survey.runner_images.iter().find(|image| image.id == id) else {
            return Ok("gone already".to_owned());
        };
        self.runner.ports.instances.retire_image(image).await?;
        Ok(format!("deregistered, {} snapshot(s) deleted", image.snapshots.len()))
    }

    /// Frees the slot `holder` holds.
    async fn free_slot(&self, survey: &Survey, holder: &RunId) -> Result<String> {
        let slots = survey.slots.iter().find(|(_, holders)| holders.contains(holder)).map(|(slots, _)| slots);
        let Some(slots) = slots else { return Ok("freed already".to_owned()) };
        self.runner.ports.runs.free_slot(&slots.profile, slots.kind, holder).await?;
        Ok("freed".to_owned())
    }

    /// Resumes a run as a waiting invocation would, and says where it stands after.
    async fn resume(&self, survey: &Survey, run_id: &RunId) -> Result<String> {
        let Some(mut record) = survey.runs.iter().find(|run| run.run_id == *run_id).cloned() else {
            return Ok("the run is gone".into());
        };
        let (before, attempt) = (record.instance_id.clone(), record.attempt_number());
        self.runner.check_progress(&mut record).await?;
        Ok(if record.state.ended() {
            format!("ended as {}", record.state.as_str())
        } else if record.attempt_number() != attempt {
            let on = record.instance_id.as_deref().map(|id| format!(" on {id}")).unwrap_or_default();
            format!("began attempt {}{on}", record.attempt_number())
        } else if record.instance_id != before {
            format!("adopted instance {}", record.instance_id.as_deref().unwrap_or_default())
        } else {
            "still running".to_owned()
        })
    }

    /// Warns whoever made `cluster`'s first destroy schedule (and the alert topic) that it fires
    /// soon, with the command that moves it; `None` when a sweep warned of it already.
    /// A warning whose sending failed is confirmed never, so a later sweep sends it.
    async fn warn(&self, survey: &Survey, cluster: &ClusterName, claimant: &str) -> Result<Option<String>> {
        let Some(schedule) = survey.first_destroy_schedule(cluster.as_str()) else { return Ok(None) };
        let history = &self.provisioner.ports.history;
        let notice = OnceNotice::DestroyWarning { schedule: schedule.name.clone(), at: schedule.at };
        if !history.claim(&notice, claimant, survey.now).await? {
            return Ok(None);
        }
        let minutes = schedule.at.duration_since(survey.now).as_mins();
        let subject = format!("SlideRule provisioner: {cluster} will be destroyed in {minutes} minutes");
        let message = format!(
            "The cluster {cluster} is scheduled to be destroyed at {} (schedule {}{}). To keep it longer, \
             schedule its destroy again, for instance in 4 hours: make cluster-schedule-destroy CLUSTER={cluster} \
             TTL=240 (at most its profile's maximum lifetime). To let it go, do nothing.",
            schedule.at,
            schedule.name,
            schedule.requested_by.as_deref().map(|who| format!(", made by {who}")).unwrap_or_default()
        );
        let notices = &*self.provisioner.ports.notices;
        let sent = match schedule.requested_by.as_deref() {
            Some(who) => notices.publish_for(&subject, &message, who).await,
            None => notices.publish(&subject, &message).await,
        };
        let told = schedule
            .requested_by
            .as_deref()
            .map_or("the alert topic".to_owned(), |who| format!("{who} and the alert topic"));
        if sent.is_ok() {
            history.confirm(&notice).await?;
        }
        let outcome = sent.map(|()| format!("warned {told}"));
        let entry = HistoryEntry {
            operation: "destroy_warning".into(),
            at: survey.now,
            requested_by: Some(SWEEPER.into()),
            outcome: outcome.as_ref().map_or_else(|error| error.code().to_owned(), |_| "success".to_owned()),
            version: None,
            detail: Some(format!("{told}: destroy at {} ({})", schedule.at, schedule.name)),
            stack_created_at: None,
        };
        if let Err(error) = history.record(cluster, &entry).await {
            tracing::warn!(cluster = %cluster, %error, "could not add the warning to the cluster's history");
        }
        outcome.map(Some)
    }

    /// Tells the alert topic that `profile`'s spend reached a level of its budget, once a month
    /// per level: the highest level this sweep claimed first; `None` when every level it reached
    /// was told already.
    async fn alert_budget(&self, survey: &Survey, profile: &str, claimant: &str) -> Result<Option<String>> {
        let catalog = &self.provisioner.catalog;
        let Some(spend) = survey.spend(catalog).into_iter().find(|spend| spend.profile == profile) else {
            return Ok(None);
        };
        let history = &self.provisioner.ports.history;
        let mut claimed = Vec::new();
        for percent in spend.alert_levels() {
            let notice = OnceNotice::BudgetAlert {
                profile: profile.to_owned(),
                month_start: start_of_month(survey.now),
                percent,
            };
            if history.claim(&notice, claimant, survey.now).await? {
                claimed.push((percent, notice));
            }
        }
        let Some(percent) = claimed.iter().map(|(percent, _)| *percent).max() else { return Ok(None) };
        let subject = format!("SlideRule provisioner: profile {profile} reached {percent}% of its monthly budget");
        let consequence = if spend.exhausted() {
            "Until the month ends, a deploy that would create a cluster and a new run of this profile are refused \
             (BudgetExceeded); what runs goes on."
        } else {
            "At 100 %, a deploy that would create a cluster and a new run of this profile are refused until the month \
             ends."
        };
        let message = format!(
            "{}. {consequence} See `make status`; destroy what is no longer needed, or raise monthly_budget_usd in \
             clusters/catalog.yaml.",
            spend.describe()
        );
        self.provisioner.ports.notices.publish(&subject, &message).await?;
        for (_, notice) in &claimed {
            history.confirm(notice).await?;
        }
        Ok(Some(format!("alerted at {percent}%")))
    }

    /// Takes the runs that ended (and hold nothing) out of the live runs: what their ending did
    /// not, when its write was lost.
    async fn forget_ended(&self, survey: &Survey) {
        let ended: Vec<RunRecord> =
            survey.runs.iter().filter(|run| run.state.ended() && !run.held_at(survey.now)).cloned().collect();
        if ended.is_empty() {
            return;
        }
        if let Err(error) = self.runner.ports.runs.forget(&ended).await {
            tracing::warn!(%error, "could not take ended runs out of the live runs; the next sweep does");
        }
    }

    /// Takes out of the live runs those whose start failed before it wrote their record (with the
    /// daily recount): every survey would look for their records again.
    async fn forget_unrecorded(&self, now: Timestamp) {
        match self.runner.ports.runs.forget_unrecorded(now - UNRECORDED_LIVE_GRACE).await {
            Ok(forgotten) if !forgotten.is_empty() => {
                let runs: Vec<String> = forgotten.iter().map(ToString::to_string).collect();
                tracing::warn!(?runs, "took runs whose record was never written out of the live runs");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "could not take unrecorded runs out of the live runs; tomorrow's sweep does")
            }
        }
    }

    /// The daily work, when a profile's books were not recounted for [`RECOUNT_EVERY`]: takes
    /// unrecorded runs out of the live runs, recounts those books, and alerts when one differed
    /// from the records.
    async fn daily_work(&self, survey: &Survey) -> Vec<Recount> {
        let due: Vec<String> = (survey.books.iter())
            .filter(|(_, books)| books.recounted_at.is_none_or(|at| survey.now - at >= RECOUNT_EVERY))
            .map(|(profile, _)| profile.clone())
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        self.forget_unrecorded(survey.now).await;
        let recounts = self.recount_books(&due).await;
        let corrected: Vec<String> =
            (recounts.iter().filter(|r| r.corrected)).map(|r| format!("- {}: {}", r.profile, r.result)).collect();
        if !corrected.is_empty() {
            let subject = format!("SlideRule provisioner: the books of {} profile(s) were corrected", corrected.len());
            alert(&*self.provisioner.ports.notices, &subject, &corrected.join("\n")).await;
        }
        recounts
    }

    /// One structured event, one metric line, and an alert when the sweep acted.
    async fn report(&self, actions: &[SweptAction]) {
        let counts: Vec<(&str, usize)> = [
            SweepAction::TerminateInstance,
            SweepAction::ResumeRun,
            SweepAction::DestroyCluster,
            SweepAction::WarnDestroy,
            SweepAction::AlertBudget,
            SweepAction::RetireImage,
            SweepAction::FreeSlot,
            SweepAction::Report,
        ]
        .into_iter()
        .map(|kind| (kind.metric(), actions.iter().filter(|a| a.finding.action == kind).count()))
        .collect();
        crate::metrics::sweep(&counts);
        let listed = serde_json::to_string(actions).unwrap_or_default();
        tracing::info!(actions = actions.len(), failed = actions.iter().filter(|a| !a.ok).count(), detail = %listed, "sweep");
        // What is only reported stays as it is and would repeat every sweep: it alerts with an action.
        // A warning and a budget alert are their own messages.
        let own_message = |action| matches!(action, SweepAction::WarnDestroy | SweepAction::AlertBudget);
        if actions.iter().all(|a| a.finding.action == SweepAction::Report || own_message(a.finding.action)) {
            return;
        }
        let lines: Vec<String> = actions
            .iter()
            .filter(|a| !own_message(a.finding.action))
            .map(|a| format!("- {:?} {}: {} -> {}", a.finding.action, a.finding.target, a.finding.reason, a.result))
            .collect();
        let subject = format!("SlideRule provisioner: the sweeper acted on {} thing(s)", lines.len());
        alert(&*self.provisioner.ports.notices, &subject, &lines.join("\n")).await;
    }
}

fn swept(finding: Finding, outcome: Result<String>) -> SweptAction {
    match outcome {
        Ok(result) => SweptAction { finding, result, ok: true },
        Err(error) => SweptAction { finding, result: format!("failed: {error} ({})", error.code()), ok: false },
    }
}
