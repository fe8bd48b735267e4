//! DESTROY(cluster), in the spec's order:
//! 1. destroy and wait up to 10 minutes;
//! 2. still there → `DestroyFailed` / `DestroyTimedOut` (schedules are kept as a safety net);
//! 3. remove every destroy schedule of the cluster; 4. success.
//!
//! Before step 1 deletes the stack, its instances are asked (SSM Run Command) to copy their
//! containers' logs to the run-log bucket; at most 60 seconds, never a failure of the destroy.

use std::sync::OnceLock;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::deploy::status_text;
use super::lock::with_lock;
use super::plan::{Plan, PlannedWrite};
use super::wait::{phase_of, wait_for_stack, Until};
use super::{seconds_between, Invocation, Provisioner};
use crate::domain::books::cluster_entry_id;
use crate::domain::cluster_logs::{instance_destination, logs_location, LOGS_WAIT_SECONDS};
use crate::domain::resource_names::{schedule_prefix, scheduled_time, stack_name};
use crate::domain::{ClusterName, ClusterRequest, HistoryEntry, StackPhase};
use crate::error::{Error, Result};
use crate::ports::CommandOutcome;

/// How often a destroy asks whether the instances copied their logs.
const LOGS_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// A DELETE_FAILED stack gets one more delete before destroy gives up: a second try often
/// succeeds once dependent resources are gone.
const MAX_DELETE_CALLS: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DestroyAction {
    /// The stack was deleted.
    Deleted,
    /// There was no stack.
    AlreadyAbsent,
}

#[derive(Debug, Clone, Serialize)]
pub struct DestroyResponse {
    pub status: &'static str,
    pub cluster: ClusterName,
    pub action: DestroyAction,
    pub stack_name: String,
    pub schedules_removed: Vec<String>,
    /// Where the cluster's container logs were saved before its instances went (exactly one of
    /// `logs` and `logs_note`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
    /// Why no logs were saved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs_note: Option<String>,
    pub elapsed_seconds: f64,
}

/// Where a destroy kept the cluster's logs, or why it kept none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeptLogs {
    At(String),
    NotKept(String),
}

impl Provisioner {
    pub async fn destroy(&self, request: ClusterRequest, invocation: &Invocation) -> Result<DestroyResponse> {
        let (cluster, requested_by) = (request.cluster.clone(), request.requested_by.clone());
        let found_created_at = OnceLock::new();
        let outcome = self.destroy_checked(request, invocation, &found_created_at).await;
        super::alert_if_failed(&*self.ports.notices, "destroy", &cluster, &outcome).await;
        let detail = match &outcome {
            Ok(response) => {
                let now = self.ports.clock.now();
                // Nobody signed a fired schedule's event: the schedule that was due names it.
                let fired = response
                    .schedules_removed
                    .iter()
                    .find(|name| requested_by.is_none() && scheduled_time(name).is_some_and(|at| at <= now));
                let action = match response.action {
                    DestroyAction::Deleted => "the stack was deleted",
                    DestroyAction::AlreadyAbsent => "there was no stack",
                };
                let logs = response.logs.as_ref().map_or_else(
                    || format!("; no logs kept: {}", response.logs_note.as_deref().unwrap_or_default()),
                    |at| format!("; logs at {at}"),
                );
                let fired = fired.map(|name| format!("; fired by schedule {name}")).unwrap_or_default();
                Some(format!("{action}{fired}{logs}"))
            }
            Err(error) => Some(error.to_string()),
        };
        let entry = self.history_entry("destroy", requested_by.as_ref(), &outcome);
        // Whatever the outcome: once the stack is gone, this says when it was made (a failed
        // create's stack billed nothing, and is not counted).
        let found = found_created_at.get().copied();
        let stack_created_at = found.filter(|(_, failed_create)| !failed_create).map(|(created, _)| created);
        if let (Ok(_), Some((_, failed_create))) = (&outcome, found) {
            self.settle_destroyed(&cluster, failed_create).await;
        }
        self.record_history(&cluster, HistoryEntry { detail, stack_created_at, ..entry }).await;
        outcome
    }

    /// Settles a destroyed cluster in its profile's books (`free`: its stack was a failed create).
    async fn settle_destroyed(&self, cluster: &ClusterName, free: bool) {
        let Ok(profile) = self.catalog.profile_for(cluster) else { return };
        let id = cluster_entry_id(cluster.as_str());
        self.ledger.settle(&profile.name, &id, self.ports.clock.now(), free).await;
    }

    /// Destroys the cluster; `found_created_at` learns when the stack it found was created, and
    /// whether it was a failed create.
    /// The spec's DESTROY decision table, steps 1 to 3 in its order: kept whole (over 60 lines)
    /// so that it reads as the spec does.
    async fn destroy_checked(
        &self,
        request: ClusterRequest,
        invocation: &Invocation,
        found_created_at: &OnceLock<(Timestamp, bool)>,
    ) -> Result<DestroyResponse> {
        let started = self.ports.clock.now();
        let cluster = request.cluster;
        self.catalog.profile_for(&cluster)?;
        with_lock(self, invocation, &cluster, "destroy", async {
            let stack_name = stack_name(&cluster);
            let limit = self.stack_wait_until(invocation, started);
            let mut stack = self.ports.stacks.describe(&stack_name).await?;
            if let Some(created_at) = stack.as_ref().and_then(|s| s.created_at) {
                let _ = found_created_at.set((created_at, phase_of(&stack) == StackPhase::FailedReplaceable));
            }
            let mut seen = stack.as_ref().map(|s| s.status.as_str().to_owned());
            let action = if stack.is_none() { DestroyAction::AlreadyAbsent } else { DestroyAction::Deleted };
            let kept = match phase_of(&stack) {
                StackPhase::Absent => KeptLogs::NotKept("there was no cluster".into()),
                StackPhase::Deleting => KeptLogs::NotKept("its stack was already being deleted".into()),
                _ => self.keep_logs(&cluster, &stack_name).await,
            };
            let mut delete_calls = 0;
            // Step 1.
            loop {
                let waited = match phase_of(&stack) {
                    StackPhase::Absent => break,
                    // CloudFormation refuses to delete a stack mid-update: let it settle first.
                    StackPhase::InProgress => {
                        wait_for_stack(self, &stack_name, Until::Settled, limit, &mut seen).await?
                    }
                    StackPhase::Deleting => {
                        wait_for_stack(self, &stack_name, Until::DeleteEnded, limit, &mut seen).await?
                    }
                    StackPhase::Running | StackPhase::FailedReplaceable | StackPhase::FailedNeedsAttention => {
                        if delete_calls == MAX_DELETE_CALLS {
                            // Step 2: it could not be deleted.
                            let reasons = self.reasons(&stack_name, &stack).await;
                            return Err(Error::DestroyFailed(format!(
                                "cluster '{cluster}' could not be destroyed: stack {stack_name} is {}{reasons}; \
                                    remove what blocks the delete and destroy again",
                                status_text(&stack)
                            )));
                        }
                        self.ports.stacks.delete(&stack_name).await?;
                        delete_calls += 1;
                        tracing::info!(stack = %stack_name, attempt = delete_calls, "stack delete started");
                        wait_for_stack(self, &stack_name, Until::DeleteEnded, limit, &mut seen).await?
                    }
                };
                stack = waited.last;
                if !waited.done {
                    // Step 2: still there after the wait.
                    return Err(Error::DestroyTimedOut(format!(
                        "cluster '{cluster}' was not destroyed in time (stack {stack_name} is still {}); destroy \
                            again to keep waiting",
                        status_text(&stack)
                    )));
                }
            }
            // Step 3.
            let schedules_removed = self.remove_destroy_schedules(&cluster).await?;
            let (logs, logs_note) = match kept {
                KeptLogs::At(location) => (Some(location), None),
                KeptLogs::NotKept(why) => (None, Some(why)),
            };
            Ok(DestroyResponse {
                status: "success",
                cluster: cluster.clone(),
                action,
                stack_name,
                schedules_removed,
                logs,
                logs_note,
                elapsed_seconds: seconds_between(started, self.ports.clock.now()),
            })
        })
        .await
    }

    /// Asks each instance of the cluster's stack to copy its containers' logs under one location
    /// of this destroy, and waits for them, at most [`LOGS_WAIT_SECONDS`] in all. Never fails:
    /// what went wrong is the note.
    async fn keep_logs(&self, cluster: &ClusterName, stack_name: &str) -> KeptLogs {
        let not_kept = |why: String| {
            tracing::warn!(cluster = %cluster, %why, "the cluster's logs were not kept");
            KeptLogs::NotKept(why)
        };
        let now = self.ports.clock.now();
        let bucket = self.settings.get("LogBucket").map(String::as_str).unwrap_or_default();
        let Some(location) = logs_location(bucket, cluster, now) else {
            return not_kept("no log bucket is configured (the provisioner's run-log bucket)".into());
        };
        let instances = match self.ports.logs.instances(stack_name).await {
            Ok(instances) if instances.is_empty() => return not_kept("the cluster had no running instance".into()),
            Ok(instances) => instances,
            Err(error) => return not_kept(format!("its instances could not be listed ({})", error.code())),
        };
        let until = now + SignedDuration::from_secs(LOGS_WAIT_SECONDS as i64);
        let mut pending = Vec::new();
        let mut refused = Vec::new();
        for instance in &instances {
            let Some(destination) = instance_destination(&location, instance) else { continue };
            match self.ports.logs.copy_logs(instance, &destination).await {
                Ok(command) => pending.push((instance.clone(), command)),
                Err(error) => refused.push(format!("{instance}: {error}")),
            }
        }
        if pending.is_empty() {
            return not_kept(format!("Run Command took no copy ({})", refused.join("; ")));
        }
        let (mut copied, mut failed) = (Vec::new(), refused);
        loop {
            let mut still = Vec::new();
            for (instance, command) in pending {
                match self.ports.logs.outcome(&command, &instance).await {
                    Ok(CommandOutcome::Succeeded) => copied.push(instance),
                    Ok(CommandOutcome::Failed(why)) => failed.push(format!("{instance}: {why}")),
                    Ok(CommandOutcome::Running) | Err(_) => still.push((instance, command)),
                }
            }
            pending = still;
            let now = self.ports.clock.now();
            if pending.is_empty() || now >= until {
                break;
            }
            self.ports.clock.sleep(LOGS_POLL.min(until.duration_since(now).unsigned_abs())).await;
        }
        failed.extend(pending.iter().map(|(instance, _)| format!("{instance}: not done in {LOGS_WAIT_SECONDS} s")));
        if copied.is_empty() {
            return not_kept(format!("no instance copied its logs ({})", failed.join("; ")));
        }
        tracing::info!(cluster = %cluster, %location, copied = copied.len(), failed = failed.len(), "cluster logs kept");
        KeptLogs::At(location)
    }

    /// Deletes every destroy schedule of `cluster`, whatever its name suffix.
    pub(super) async fn remove_destroy_schedules(&self, cluster: &ClusterName) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for schedule in self.ports.schedules.list(&schedule_prefix(cluster)).await? {
            self.ports.schedules.delete(&schedule.name).await?;
            tracing::info!(cluster = %cluster, schedule = %schedule.name, at = %schedule.at, "destroy schedule \
                removed");
            removed.push(schedule.name);
        }
        Ok(removed)
    }
}

impl Provisioner {
    /// DRY_RUN of DESTROY: the stack it would delete and the schedules it would remove, from
    /// reads only, without the lock.
    pub async fn plan_destroy(&self, request: &ClusterRequest) -> Result<Plan> {
        let cluster = &request.cluster;
        self.catalog.profile_for(cluster)?;
        let name = stack_name(cluster);
        let stack = self.ports.stacks.describe(&name).await?;
        let schedules = self.ports.schedules.list(&schedule_prefix(cluster)).await?;
        let status = status_text(&stack);
        let (branch, mut plan) = match phase_of(&stack) {
            StackPhase::Absent => ("step 1: there is no stack: nothing to delete".to_owned(), Vec::new()),
            StackPhase::Deleting => {
                (format!("step 1: the stack is {status}: wait up to 10 minutes for it"), Vec::new())
            }
            StackPhase::InProgress => (
                format!("step 1: the stack is {status}: wait for it to settle, then delete it and wait"),
                vec![PlannedWrite::new("CloudFormation.DeleteStack", serde_json::json!({"stack": name}))],
            ),
            _ => (
                format!("step 1: the stack is {status}: delete it and wait up to 10 minutes"),
                vec![PlannedWrite::new("CloudFormation.DeleteStack", serde_json::json!({"stack": name}))],
            ),
        };
        for schedule in &schedules {
            plan.push(PlannedWrite::new(
                "Scheduler.DeleteSchedule",
                serde_json::json!({"schedule": schedule.name, "at": schedule.at.to_string()}),
            ));
        }
        Ok(Plan::new("destroy", branch, plan))
    }
}
