//! SCHEDULE_DESTROY(cluster, time_to_destroy), in the spec's order:
//! 1. a schedule exists and now ≥ its time − 5 minutes → `TooLateToReschedule`;
//! 2. a schedule exists and now < its time − 5 minutes → remove it;
//! 3. schedule the destroy at `time_to_destroy`; 4. success.

use serde::Serialize;

use super::lock::with_lock;
use super::{schedule_name, Invocation, Provisioner};
use crate::domain::time::can_reschedule;
use crate::domain::{ClusterName, ClusterRequest, ScheduleDestroyRequest};
use crate::error::{Error, Result};

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
    pub async fn schedule_destroy(&self, request: ScheduleDestroyRequest, invocation: &Invocation) -> Result<ScheduleDestroyResponse> {
        let ScheduleDestroyRequest { cluster, time_to_destroy } = request;
        self.catalog.profile_for(&cluster)?;
        with_lock(self, invocation, &cluster, "schedule_destroy", async {
            let now = self.clock.now();
            if time_to_destroy <= now {
                return Err(Error::invalid(format!(
                    "time_to_destroy {time_to_destroy} passed while waiting for the cluster; give a later time"
                )));
            }
            let existing = self.schedules.list(&super::schedule_prefix(&cluster)).await?;
            // Step 1.
            if let Some(due) = existing.iter().filter(|s| !can_reschedule(s.at, now)).min_by_key(|s| s.at) {
                return Err(Error::TooLateToReschedule { cluster: cluster.to_string(), at: due.at.to_string() });
            }
            // Step 2.
            let mut replaced = Vec::new();
            for schedule in &existing {
                self.schedules.delete(&schedule.name).await?;
                replaced.push(format!("{}@{}", schedule.name, schedule.at));
            }
            // Step 3.
            let name = schedule_name(&cluster, time_to_destroy);
            let input = ClusterRequest { cluster: cluster.clone() }.to_event();
            self.schedules.create(&name, time_to_destroy, &input).await?;
            tracing::info!(cluster = %cluster, schedule = %name, at = %time_to_destroy, replaced = replaced.len(), "destroy scheduled");
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
}
