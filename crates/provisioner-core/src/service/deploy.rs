//! DEPLOY(cluster), in the spec's order:
//! 1. running → success (even when a delete is scheduled);
//! 2. scheduled for delete → `ScheduledForDelete`;
//! 3. deploy and wait up to 10 minutes;
//! 4. running → success; 5. else `DeployFailed` / `DeployTimedOut`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use super::lock::with_lock;
use super::wait::{phase_of, wait_for_stack, Until};
use super::{schedule_prefix, seconds_between, Invocation, Provisioner};
use crate::catalog::{stack_name, Profile};
use crate::domain::{ClusterName, ClusterRequest, StackPhase};
use crate::error::{AwsErrorKind, Error, Result};
use crate::ports::{StackSnapshot, StackSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployAction {
    /// It was running already; nothing was changed.
    AlreadyRunning,
    /// A new stack was created.
    Created,
    /// A stack that was already being created or updated finished.
    Waited,
    /// A failed stack that left nothing behind was deleted and created again.
    Replaced,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeployResponse {
    pub status: &'static str,
    pub cluster: ClusterName,
    pub profile: String,
    pub action: DeployAction,
    pub stack_name: String,
    pub stack_id: String,
    pub stack_status: String,
    pub outputs: BTreeMap<String, String>,
    pub elapsed_seconds: f64,
}

impl Provisioner {
    pub async fn deploy(&self, request: ClusterRequest, invocation: &Invocation) -> Result<DeployResponse> {
        let started = self.clock.now();
        let cluster = request.cluster;
        let profile = self.catalog.profile_for(&cluster)?;
        let stack_name = stack_name(&cluster);
        // Step 1 before the lock: a running cluster answers in one call.
        if let Some(stack) = self.stacks.describe(&stack_name).await? {
            if stack.status.phase() == StackPhase::Running {
                return Ok(self.deploy_response(&cluster, profile, stack_name, stack, DeployAction::AlreadyRunning, started));
            }
        }
        with_lock(self, invocation, &cluster, "deploy", self.deploy_locked(&cluster, profile, &stack_name, invocation, started)).await
    }

    async fn deploy_locked(
        &self,
        cluster: &ClusterName,
        profile: &Profile,
        stack_name: &str,
        invocation: &Invocation,
        started: Timestamp,
    ) -> Result<DeployResponse> {
        // The table again under the lock: another deploy may have finished while we waited.
        let mut stack = self.stacks.describe(stack_name).await?;
        if let Some(running) = stack.clone().filter(|s| s.status.phase() == StackPhase::Running) {
            return Ok(self.deploy_response(cluster, profile, stack_name.to_owned(), running, DeployAction::AlreadyRunning, started));
        }
        // Step 2.
        let scheduled = self.schedules.list(&schedule_prefix(cluster)).await?;
        if let Some(first) = scheduled.iter().min_by_key(|s| s.at) {
            return Err(Error::ScheduledForDelete { cluster: cluster.to_string(), at: first.at.to_string() });
        }
        // Step 3: bring the stack to running, whatever state it is in, within one time limit.
        let limit = self.stack_wait_until(invocation, started);
        let mut seen = stack.as_ref().map(|s| s.status.as_str().to_owned());
        let mut action = if stack.is_some() { DeployAction::Waited } else { DeployAction::Created };
        let mut created = false;
        let mut replaced = false;
        loop {
            let waited = match phase_of(&stack) {
                // Step 4.
                StackPhase::Running => {
                    let stack = stack.expect("a running stack exists");
                    return Ok(self.deploy_response(cluster, profile, stack_name.to_owned(), stack, action, started));
                }
                StackPhase::Absent if created => {
                    return Err(self.deploy_failed(cluster, stack_name, &stack).await);
                }
                StackPhase::Absent => {
                    created = true;
                    match self.stacks.create(&self.stack_spec(cluster, profile, stack_name)).await {
                        Ok(stack_id) => {
                            tracing::info!(stack = stack_name, %stack_id, "stack create started");
                            if !replaced {
                                action = DeployAction::Created;
                            }
                        }
                        // Someone outside the lock created it first: wait for theirs.
                        Err(error) if error.aws_kind() == Some(AwsErrorKind::Conflict) => action = DeployAction::Waited,
                        Err(error) => return Err(error),
                    }
                    wait_for_stack(self, stack_name, Until::Settled, limit, &mut seen).await?
                }
                StackPhase::InProgress => wait_for_stack(self, stack_name, Until::Settled, limit, &mut seen).await?,
                StackPhase::Deleting => wait_for_stack(self, stack_name, Until::DeleteEnded, limit, &mut seen).await?,
                // A failed stack that left nothing behind is replaced, once, unless we made it.
                StackPhase::FailedReplaceable if !created && !replaced => {
                    replaced = true;
                    action = DeployAction::Replaced;
                    tracing::info!(stack = stack_name, status = %status_text(&stack), "replacing failed stack");
                    self.stacks.delete(stack_name).await?;
                    wait_for_stack(self, stack_name, Until::DeleteEnded, limit, &mut seen).await?
                }
                // Step 5.
                StackPhase::FailedReplaceable | StackPhase::FailedNeedsAttention => {
                    return Err(self.deploy_failed(cluster, stack_name, &stack).await);
                }
            };
            stack = waited.last;
            if !waited.done {
                return Err(self.deploy_timed_out(cluster, stack_name, &status_text(&stack)));
            }
        }
    }

    fn stack_spec(&self, cluster: &ClusterName, profile: &Profile, stack_name: &str) -> StackSpec {
        StackSpec {
            name: stack_name.to_owned(),
            template_body: profile.template_body.to_owned(),
            parameters: profile.stack_parameters(cluster),
            tags: vec![
                ("sliderule:cluster".into(), cluster.to_string()),
                ("sliderule:profile".into(), profile.name.clone()),
                ("sliderule:provisioner".into(), "true".into()),
            ],
        }
    }

    fn deploy_response(
        &self,
        cluster: &ClusterName,
        profile: &Profile,
        stack_name: String,
        stack: StackSnapshot,
        action: DeployAction,
        started: Timestamp,
    ) -> DeployResponse {
        DeployResponse {
            status: "success",
            cluster: cluster.clone(),
            profile: profile.name.clone(),
            action,
            stack_name,
            stack_id: stack.id,
            stack_status: stack.status.to_string(),
            outputs: stack.outputs,
            elapsed_seconds: seconds_between(started, self.clock.now()),
        }
    }

    fn deploy_timed_out(&self, cluster: &ClusterName, stack_name: &str, status: &str) -> Error {
        Error::DeployTimedOut(format!(
            "cluster '{cluster}' did not finish deploying in time (stack {stack_name} is still {status}); deploy again to keep waiting, or destroy it"
        ))
    }

    async fn deploy_failed(&self, cluster: &ClusterName, stack_name: &str, stack: &Option<StackSnapshot>) -> Error {
        let status = status_text(stack);
        let reasons = self.reasons(stack_name, stack).await;
        let advice = match phase_of(stack) {
            StackPhase::FailedReplaceable => "fix the cause and deploy again, which replaces the failed stack",
            StackPhase::Absent => "the stack was deleted while it was being created; deploy again",
            _ => "destroy the cluster, then deploy again",
        };
        Error::DeployFailed(format!("cluster '{cluster}' failed to deploy: stack {stack_name} is {status}{reasons}; {advice}"))
    }

    /// " (reasons: a; b)" from the stack's failed events, or its status reason; never fails.
    pub(super) async fn reasons(&self, stack_name: &str, stack: &Option<StackSnapshot>) -> String {
        let mut reasons = match self.stacks.failure_reasons(stack_name).await {
            Ok(reasons) => reasons,
            Err(error) => {
                tracing::warn!(stack = stack_name, %error, "could not read stack events");
                Vec::new()
            }
        };
        if reasons.is_empty() {
            reasons.extend(stack.as_ref().and_then(|s| s.status_reason.clone()));
        }
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" (reasons: {})", reasons.join("; "))
        }
    }
}

pub(super) fn status_text(stack: &Option<StackSnapshot>) -> String {
    stack.as_ref().map_or_else(|| "absent".to_owned(), |s| s.status.to_string())
}
