//! SCHEDULE_DESTROY(cluster, time_to_destroy), in the spec's order:
//! 1. a schedule exists and now ≥ its time − 5 minutes → `TooLateToReschedule`;
//! 2. a schedule exists and now < its time − 5 minutes → remove it;
//! 3. schedule the destroy at `time_to_destroy`; 4. success.
//!
//! Step 3 runs before step 2 removes the old schedules, so a failed call never leaves a cluster
//! without a destroy schedule; a schedule already at `time_to_destroy` is kept as it is.

use serde::Serialize;

use super::lock::with_lock;
use super::plan::{Plan, PlannedWrite};
use super::{Invocation, Provisioner};
use crate::domain::resource_names::{schedule_name, schedule_prefix};
use crate::domain::time::can_reschedule;
use crate::domain::{ClusterName, HistoryEntry, ScheduleDestroyRequest};
use crate::error::{Error, Result};
use crate::ports::ScheduleEntry;

#[derive(Debug, Clone, Serialize)]
pub struct ScheduleDestroyResponse {
    pub status: &'static str,
    pub cluster: ClusterName,
    pub time_to_destroy: String,
    pub schedule_name: String,
    /// Schedules this call removed, as `name@time`.
    pub replaced: Vec<String>,
}

impl Provisioner {
    pub async fn schedule_destroy(
        &self,
        request: ScheduleDestroyRequest,
        invocation: &Invocation,
    ) -> Result<ScheduleDestroyResponse> {
        let (cluster, requested_by) = (request.cluster.clone(), request.requested_by.clone());
        let at = request.time_to_destroy;
        let outcome = self.schedule_destroy_checked(request, invocation).await;
        let detail = match &outcome {
            Ok(response) if response.replaced.is_empty() => format!("destroy at {at}"),
            Ok(response) => format!("destroy at {at}, replacing {}", response.replaced.join(", ")),
            Err(error) => error.to_string(),
        };
        let entry = self.history_entry("schedule_destroy", requested_by.as_ref(), &outcome);
        self.record_history(&cluster, HistoryEntry { detail: Some(detail), ..entry }).await;
        outcome
    }

    async fn schedule_destroy_checked(
        &self,
        request: ScheduleDestroyRequest,
        invocation: &Invocation,
    ) -> Result<ScheduleDestroyResponse> {
        self.check_within_lifetime(&request)?;
        let ScheduleDestroyRequest { cluster, time_to_destroy, requested_by } = request;
        with_lock(self, invocation, &cluster, "schedule_destroy", async {
            let now = self.ports.clock.now();
            if time_to_destroy <= now {
                return Err(Error::invalid(format!(
                    "time_to_destroy {time_to_destroy} passed while waiting for the cluster; give a later time"
                )));
            }
            let existing = self.ports.schedules.list(&schedule_prefix(&cluster)).await?;
            // Step 1.
            too_late_to_reschedule(&cluster, &existing, now)?;
            // Steps 2 and 3, creating before removing: should a call fail, the cluster keeps a
            // destroy schedule (the old one or both), never none.
            let name = schedule_name(&cluster, time_to_destroy);
            let (same, others): (Vec<_>, Vec<_>) = existing.iter().partition(|s| s.name == name);
            let kept = same.iter().any(|s| s.at == time_to_destroy);
            let mut replaced = Vec::new();
            if !kept {
                // A schedule of this name at another time can only be hand-made; it must go first.
                self.remove_schedules(&same, &mut replaced).await?;
                self.create_destroy_schedule(&cluster, time_to_destroy, requested_by.as_ref()).await?;
            }
            self.remove_schedules(&others, &mut replaced).await?;
            tracing::info!(
                cluster = %cluster,
                schedule = %name,
                at = %time_to_destroy,
                replaced = replaced.len(),
                "destroy scheduled"
            );
            Ok(ScheduleDestroyResponse {
                status: "success",
                cluster: cluster.clone(),
                time_to_destroy: time_to_destroy.to_string(),
                schedule_name: name,
                replaced,
            })
        })
        .await
    }

    /// A time beyond the profile's maximum lifetime from now is refused, before any call.
    fn check_within_lifetime(&self, request: &ScheduleDestroyRequest) -> Result<()> {
        let (cluster, time_to_destroy) = (&request.cluster, request.time_to_destroy);
        let profile = self.catalog.profile_for(cluster)?;
        let Some(max) = profile.max_ttl else { return Ok(()) };
        let latest = self.ports.clock.now() + max;
        if time_to_destroy > latest {
            return Err(Error::invalid(format!(
                "time_to_destroy {time_to_destroy} is beyond the '{}' profile's maximum lifetime of {} minutes from \
                 now; give a time no later than {}",
                profile.name,
                max.as_mins(),
                crate::domain::time::whole_seconds(latest)
            )));
        }
        Ok(())
    }

    async fn remove_schedules(&self, schedules: &[&ScheduleEntry], removed: &mut Vec<String>) -> Result<()> {
        for schedule in schedules {
            self.ports.schedules.delete(&schedule.name).await?;
            removed.push(format!("{}@{}", schedule.name, schedule.at));
        }
        Ok(())
    }
}

impl Provisioner {
    /// DRY_RUN of SCHEDULE_DESTROY: the branch the call would take and the schedules it would
    /// create and remove, from reads only, without the lock.
    pub async fn plan_schedule_destroy(&self, request: &ScheduleDestroyRequest) -> Result<Plan> {
        let (cluster, time_to_destroy) = (&request.cluster, request.time_to_destroy);
        self.check_within_lifetime(request)?;
        let now = self.ports.clock.now();
        let existing = self.ports.schedules.list(&schedule_prefix(cluster)).await?;
        too_late_to_reschedule(cluster, &existing, now)?;
        let name = schedule_name(cluster, time_to_destroy);
        let kept = existing.iter().any(|s| s.name == name && s.at == time_to_destroy);
        let mut plan = Vec::new();
        if !kept {
            plan.push(PlannedWrite::new(
                "Scheduler.CreateSchedule",
                serde_json::json!({"schedule": name, "at": time_to_destroy.to_string(), "input": {"cluster": cluster}}),
            ));
        }
        for old in existing.iter().filter(|s| !(s.name == name && s.at == time_to_destroy)) {
            plan.push(PlannedWrite::new(
                "Scheduler.DeleteSchedule",
                serde_json::json!({"schedule": old.name, "at": old.at.to_string()}),
            ));
        }
        let branch = match (existing.is_empty(), kept) {
            (true, _) => "step 3: no schedule yet: create one".to_owned(),
            (false, true) => "steps 2 and 3: a schedule at that time exists: keep it, remove the others".to_owned(),
            (false, false) => {
                "steps 2 and 3: the existing schedule is due in more than 5 minutes: replace it".to_owned()
            }
        };
        Ok(Plan::new("schedule_destroy", branch, plan))
    }
}

/// Step 1: a schedule due in 5 minutes or less cannot be moved.
fn too_late_to_reschedule(cluster: &ClusterName, existing: &[ScheduleEntry], now: jiff::Timestamp) -> Result<()> {
    match existing.iter().filter(|s| !can_reschedule(s.at, now)).min_by_key(|s| s.at) {
        Some(due) => Err(Error::TooLateToReschedule { cluster: cluster.to_string(), at: due.at.to_string() }),
        None => Ok(()),
    }
}
