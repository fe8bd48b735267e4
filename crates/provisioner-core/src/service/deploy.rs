//! DEPLOY(cluster), in the spec's order:
//! 1. running → success (even when a delete is scheduled);
//! 2. scheduled for delete → `ScheduledForDelete`;
//! 3. deploy and wait up to 10 minutes: before anything is created, every image the profile runs
//!    must be in the registry at the version's tag, or the answer is `ImagesMissing`, and the
//!    profile's spend this month must be under its budget, or the answer is `BudgetExceeded`;
//! 4. running → success; 5. else `DeployFailed` / `DeployTimedOut`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use super::lock::with_lock_or;
use super::plan::{Plan, PlannedWrite};
use super::wait::{phase_of, wait_for_stack, Until};
use super::{seconds_between, Invocation, Provisioner};
use crate::catalog::Profile;
use crate::domain::books::{cluster_entry_id, SpendEntry};
use crate::domain::names::{MAIN_IMAGE_TAG, RELEASE_IMAGE_TAG};
use crate::domain::resource_names::{schedule_prefix, stack_name};
use crate::domain::tags;
use crate::domain::{ClusterName, DeployRequest, HistoryEntry, ImageTag, RequestedBy, StackPhase};
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
    /// The image tag the cluster runs.
    pub version: String,
    /// The tag this deploy asked for (the profile's default when the event named none).
    pub requested_version: ImageTag,
    /// The cluster was already running (or being created) at another version, and still is.
    pub version_differs: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When this deploy scheduled the cluster's destroy (the profile's default lifetime).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_destroy: Option<String>,
    pub outputs: BTreeMap<String, String>,
    pub elapsed_seconds: f64,
}

/// What one deploy asks for.
struct Target<'a> {
    cluster: &'a ClusterName,
    profile: &'a Profile,
    version: ImageTag,
    stack_name: String,
    started: Timestamp,
    requested_by: Option<RequestedBy>,
}

impl Provisioner {
    pub async fn deploy(&self, request: DeployRequest, invocation: &Invocation) -> Result<DeployResponse> {
        let (cluster, requested_by) = (request.cluster.clone(), request.requested_by.clone());
        let asked = request.version.as_ref().map(ToString::to_string);
        let outcome = self.deploy_checked(request, invocation).await;
        super::alert_if_failed(&*self.ports.notices, "deploy", &cluster, &outcome).await;
        let (version, detail) = match &outcome {
            Ok(response) => {
                let action = serde_json::to_value(response.action).ok().and_then(|a| a.as_str().map(str::to_owned));
                let scheduled = response.time_to_destroy.as_ref().map(|at| format!("; destroy scheduled at {at}"));
                (Some(response.version.to_string()), action.map(|a| format!("{a}{}", scheduled.unwrap_or_default())))
            }
            Err(error) => (asked, Some(error.to_string())),
        };
        let entry = self.history_entry("deploy", requested_by.as_ref(), &outcome);
        self.record_history(&cluster, HistoryEntry { version, detail, ..entry }).await;
        outcome
    }

    /// What `request` asks for: its profile and the version's image tag (checked before any call).
    fn target<'a>(&'a self, request: &'a DeployRequest) -> Result<Target<'a>> {
        let cluster = &request.cluster;
        let profile = self.catalog.profile_for(cluster)?;
        let version = match &request.version {
            Some(version) => ImageTag::to_deploy(version)?,
            None => profile.default_version.clone(),
        };
        Ok(Target {
            cluster,
            profile,
            version,
            stack_name: stack_name(cluster),
            started: self.ports.clock.now(),
            requested_by: request.requested_by.clone(),
        })
    }

    async fn deploy_checked(&self, request: DeployRequest, invocation: &Invocation) -> Result<DeployResponse> {
        let target = self.target(&request)?;
        let cluster = target.cluster;
        // Step 1 before the lock: a running cluster answers in one call.
        if let Some(stack) = self.ports.stacks.describe(&target.stack_name).await? {
            if stack.status.phase() == StackPhase::Running {
                return Ok(self.deploy_response(&target, stack, DeployAction::AlreadyRunning));
            }
        }
        // While another operation holds the cluster, a stack that becomes running is the answer.
        let running_now = || async {
            match self.ports.stacks.describe(&target.stack_name).await {
                Ok(Some(stack)) if stack.status.phase() == StackPhase::Running => {
                    Some(self.deploy_response(&target, stack, DeployAction::Waited))
                }
                _ => None,
            }
        };
        with_lock_or(self, invocation, cluster, "deploy", running_now, self.deploy_locked(&target, invocation)).await
    }

    /// The spec's DEPLOY decision table, row by row in its order, under the cluster's lock: kept
    /// whole (over 60 lines) so that it reads as the spec does.
    async fn deploy_locked(&self, target: &Target<'_>, invocation: &Invocation) -> Result<DeployResponse> {
        let (cluster, stack_name) = (target.cluster, target.stack_name.as_str());
        // The table again under the lock: another deploy may have finished while we waited.
        let mut stack = self.ports.stacks.describe(stack_name).await?;
        if let Some(running) = stack.clone().filter(|s| s.status.phase() == StackPhase::Running) {
            return Ok(self.deploy_response(target, running, DeployAction::AlreadyRunning));
        }
        // Step 2.
        let scheduled = self.ports.schedules.list(&schedule_prefix(cluster)).await?;
        if let Some(first) = scheduled.iter().min_by_key(|s| s.at) {
            return Err(Error::ScheduledForDelete { cluster: cluster.to_string(), at: first.at.to_string() });
        }
        // Step 3: bring the stack to running, whatever state it is in, within one time limit.
        let limit = self.stack_wait_until(invocation, target.started);
        let mut seen = stack.as_ref().map(|s| s.status.as_str().to_owned());
        let mut action = if stack.is_some() { DeployAction::Waited } else { DeployAction::Created };
        let mut created = false;
        let mut replaced = false;
        // The stack to create, once its parameters and images are known to be good.
        let mut ready: Option<StackSpec> = None;
        loop {
            let waited = match phase_of(&stack) {
                // Step 4.
                StackPhase::Running => {
                    let stack = stack.expect("a running stack exists");
                    let mut response = self.deploy_response(target, stack, action);
                    // Step 2 found no schedule, and the lock kept others from making one.
                    self.schedule_default_destroy(target, &mut response).await;
                    return Ok(response);
                }
                StackPhase::Absent if created => {
                    self.settle_cluster(target, true).await;
                    return Err(self.deploy_failed(cluster, stack_name, &stack).await);
                }
                StackPhase::Absent => {
                    let spec = match ready.take() {
                        Some(spec) => spec,
                        None => self.ready_to_create(target).await?,
                    };
                    created = true;
                    self.count_cluster(target, &spec).await?;
                    match self.ports.stacks.create(&spec).await {
                        Ok(stack_id) => {
                            tracing::info!(stack = stack_name, %stack_id, version = %target.version, "stack create \
                                started");
                            if !replaced {
                                action = DeployAction::Created;
                            }
                        }
                        // Someone outside the lock created it first: wait for theirs.
                        Err(error) if error.aws_kind() == Some(AwsErrorKind::Conflict) => action = DeployAction::Waited,
                        Err(error) => {
                            self.settle_cluster(target, true).await;
                            return Err(error);
                        }
                    }
                    wait_for_stack(self, stack_name, Until::Settled, limit, &mut seen).await?
                }
                StackPhase::InProgress => wait_for_stack(self, stack_name, Until::Settled, limit, &mut seen).await?,
                StackPhase::Deleting => wait_for_stack(self, stack_name, Until::DeleteEnded, limit, &mut seen).await?,
                // A failed stack that left nothing behind is replaced, once, unless we made it;
                // only when its replacement can be created.
                StackPhase::FailedReplaceable if !created && !replaced => {
                    ready = Some(self.ready_to_create(target).await?);
                    replaced = true;
                    action = DeployAction::Replaced;
                    tracing::info!(stack = stack_name, status = %status_text(&stack), "replacing failed stack");
                    self.ports.stacks.delete(stack_name).await?;
                    wait_for_stack(self, stack_name, Until::DeleteEnded, limit, &mut seen).await?
                }
                // Step 5. A failed create left nothing that bills.
                StackPhase::FailedReplaceable | StackPhase::FailedNeedsAttention => {
                    if created && phase_of(&stack) == StackPhase::FailedReplaceable {
                        self.settle_cluster(target, true).await;
                    }
                    return Err(self.deploy_failed(cluster, stack_name, &stack).await);
                }
            };
            stack = waited.last;
            if !waited.done {
                return Err(self.deploy_timed_out(cluster, stack_name, &status_text(&stack)));
            }
        }
    }

    /// The stack to create, after checking that it can be: its parameters are all set, every
    /// image the profile runs is in the registry at the tag (`ImagesMissing` otherwise), and the
    /// profile's spend this month has not reached its budget (`BudgetExceeded` otherwise).
    async fn ready_to_create(&self, target: &Target<'_>) -> Result<StackSpec> {
        let spec = self.stack_spec(target)?;
        self.check_images(target).await?;
        self.ledger.allow(target.profile, &format!("cluster '{}'", target.cluster)).await?;
        Ok(spec)
    }

    /// Begins the cluster in its profile's books, before its stack is created: a cluster the
    /// books cannot count is not created.
    async fn count_cluster(&self, target: &Target<'_>, spec: &StackSpec) -> Result<()> {
        let parameters: BTreeMap<String, String> = spec.parameters.iter().cloned().collect();
        let rate = target.profile.hourly_cost(&parameters, self.catalog.prices()).unwrap_or(0.0);
        let entry = SpendEntry::cluster(target.cluster.as_str(), rate, self.ports.clock.now());
        self.ledger.begin(&target.profile.name, entry).await
    }

    /// Settles the cluster in its profile's books now (`free`: its create failed, and left
    /// nothing that bills).
    async fn settle_cluster(&self, target: &Target<'_>, free: bool) {
        let id = cluster_entry_id(target.cluster.as_str());
        self.ledger.settle(&target.profile.name, &id, self.ports.clock.now(), free).await;
    }

    async fn check_images(&self, target: &Target<'_>) -> Result<()> {
        let registry = self.settings.get("ContainerRegistry").filter(|r| !r.is_empty()).ok_or_else(|| {
            Error::DeployFailed(
                "the provisioner has no container registry setting; set ContainerRegistry in its template".into(),
            )
        })?;
        let missing = self.ports.images.missing(registry, &target.profile.images, &target.version).await?;
        if missing.is_empty() {
            return Ok(());
        }
        let (cluster, tag) = (target.cluster, &target.version);
        let build = match tag.as_str() {
            MAIN_IMAGE_TAG => {
                format!("build them with `make cluster-build CLUSTER={cluster} VERSION=main`, then deploy again")
            }
            RELEASE_IMAGE_TAG => format!(
                "'latest' is pushed by the repository's release process; or build a release with \
                 `make cluster-build CLUSTER={cluster} VERSION=vX.Y.Z` and deploy that version"
            ),
            _ => format!("build them with `make cluster-build CLUSTER={cluster} VERSION={tag}`, then deploy again"),
        };
        Err(Error::ImagesMissing(format!(
            "cluster '{cluster}' was not deployed: {registry} has no image tagged '{tag}' in {}; nothing was created; \
                {build}",
            missing.join(", ")
        )))
    }

    fn stack_spec(&self, target: &Target<'_>) -> Result<StackSpec> {
        let (cluster, profile) = (target.cluster, target.profile);
        let mut tags = vec![
            (tags::CLUSTER.into(), cluster.to_string()),
            (tags::PROFILE.into(), profile.name.clone()),
            (tags::VERSION.into(), target.version.to_string()),
            (tags::PROVISIONER.into(), "true".into()),
            // CloudFormation copies it onto the cluster's instances: they say they are a cluster's.
            (tags::KIND.into(), tags::CLUSTER_KIND.into()),
        ];
        if let Some(who) = &target.requested_by {
            tags.push((tags::REQUESTED_BY.into(), who.as_str().to_owned()));
        }
        Ok(StackSpec {
            name: target.stack_name.clone(),
            template_body: profile.template_body.to_owned(),
            parameters: profile.stack_parameters(cluster, &target.version, &self.settings)?,
            tags,
        })
    }

    /// Schedules the destroy of a cluster this deploy brought up at its profile's default lifetime.
    /// The cluster runs either way: a failure is a note in the answer, and the sweeper destroys the
    /// cluster at its profile's maximum lifetime.
    async fn schedule_default_destroy(&self, target: &Target<'_>, response: &mut DeployResponse) {
        let Some(lifetime) = target.profile.default_ttl else { return };
        let at = crate::domain::time::whole_seconds(self.ports.clock.now()) + lifetime;
        match self.create_destroy_schedule(target.cluster, at, target.requested_by.as_ref()).await {
            Ok(name) => {
                tracing::info!(cluster = %target.cluster, schedule = %name, %at, "destroy scheduled at the default \
                lifetime")
            }
            // Made already, by an earlier attempt whose answer was lost.
            Err(error) if error.aws_kind() == Some(AwsErrorKind::Conflict) => {}
            Err(error) => {
                tracing::warn!(cluster = %target.cluster, %error, "could not schedule the default destroy");
                response.note = Some(format!(
                    "{}the destroy at the profile's default lifetime could not be scheduled ({error}); run \
                     schedule_destroy, or the sweeper destroys it at the profile's maximum lifetime",
                    response.note.as_ref().map(|n| format!("{n}; ")).unwrap_or_default()
                ));
                return;
            }
        }
        response.time_to_destroy = Some(at.to_string());
    }

    fn deploy_response(&self, target: &Target<'_>, stack: StackSnapshot, action: DeployAction) -> DeployResponse {
        let cluster = target.cluster;
        let version = stack.parameters.get("Version").cloned().unwrap_or_else(|| "unknown".to_owned());
        let version_differs = version != target.version.as_str();
        let note = version_differs.then(|| {
            format!(
                "cluster '{cluster}' runs version '{version}', not '{}'; destroy it and deploy again to run '{}'",
                target.version, target.version
            )
        });
        DeployResponse {
            status: "success",
            cluster: cluster.clone(),
            profile: target.profile.name.clone(),
            action,
            stack_name: target.stack_name.clone(),
            stack_id: stack.id,
            stack_status: stack.status.to_string(),
            version,
            requested_version: target.version.clone(),
            version_differs,
            note,
            time_to_destroy: None,
            outputs: stack.outputs,
            elapsed_seconds: seconds_between(target.started, self.ports.clock.now()),
        }
    }

    fn deploy_timed_out(&self, cluster: &ClusterName, stack_name: &str, status: &str) -> Error {
        Error::DeployTimedOut(format!(
            "cluster '{cluster}' did not finish deploying in time (stack {stack_name} is still {status}); deploy \
                again to keep waiting, or destroy it"
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
        Error::DeployFailed(format!(
            "cluster '{cluster}' failed to deploy: stack {stack_name} is {status}{reasons}; {advice}"
        ))
    }

    /// " (reasons: a; b)" from the stack's failed events, or its status reason; never fails.
    pub(super) async fn reasons(&self, stack_name: &str, stack: &Option<StackSnapshot>) -> String {
        let mut reasons = match self.ports.stacks.failure_reasons(stack_name).await {
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

impl Provisioner {
    /// DRY_RUN of DEPLOY: the branch of the table the deploy would take and the writes it would
    /// make, from reads only (the stack, the schedules, the registry), without the lock.
    pub async fn plan_deploy(&self, request: &DeployRequest) -> Result<Plan> {
        let target = self.target(request)?;
        let (cluster, profile, now) = (target.cluster, target.profile, target.started);
        let stack = self.ports.stacks.describe(&target.stack_name).await?;
        if let Some(running) = stack.as_ref().filter(|s| s.status.phase() == StackPhase::Running) {
            let version = running.parameters.get("Version").map_or("?", String::as_str);
            let branch = format!("step 1: {} is running at version {version}: success, nothing changes", running.name);
            return Ok(Plan::new("deploy", branch, Vec::new()));
        }
        let scheduled = self.ports.schedules.list(&schedule_prefix(cluster)).await?;
        if let Some(first) = scheduled.iter().min_by_key(|s| s.at) {
            return Err(Error::ScheduledForDelete { cluster: cluster.to_string(), at: first.at.to_string() });
        }
        let create = |spec: &StackSpec| {
            let parameters: BTreeMap<&str, &str> =
                spec.parameters.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let tags: BTreeMap<&str, &str> = spec.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            PlannedWrite::new(
                "CloudFormation.CreateStack",
                serde_json::json!({"stack": spec.name, "profile": profile.name, "parameters": parameters, "tags": tags}),
            )
        };
        let status = status_text(&stack);
        let (branch, mut plan) = match phase_of(&stack) {
            StackPhase::Absent => {
                let spec = self.ready_to_create(&target).await?;
                ("step 3: there is no stack: create it and wait up to 10 minutes".to_owned(), vec![create(&spec)])
            }
            StackPhase::InProgress => {
                (format!("step 3: the stack is {status}: wait up to 10 minutes for it"), Vec::new())
            }
            StackPhase::Deleting => {
                let spec = self.ready_to_create(&target).await?;
                (format!("step 3: the stack is {status}: wait for the delete, then create it"), vec![create(&spec)])
            }
            StackPhase::FailedReplaceable => {
                let spec = self.ready_to_create(&target).await?;
                let delete =
                    PlannedWrite::new("CloudFormation.DeleteStack", serde_json::json!({"stack": target.stack_name}));
                (format!("step 3: the stack is {status} and left nothing: replace it"), vec![delete, create(&spec)])
            }
            StackPhase::FailedNeedsAttention | StackPhase::Running => {
                return Err(self.deploy_failed(cluster, &target.stack_name, &stack).await);
            }
        };
        if let Some(lifetime) = profile.default_ttl {
            let at = crate::domain::time::whole_seconds(now) + lifetime;
            plan.push(PlannedWrite::new(
                "Scheduler.CreateSchedule",
                serde_json::json!({
                    "schedule": crate::domain::resource_names::schedule_name(cluster, at),
                    "at": at.to_string(),
                    "why": format!("the '{}' profile's default lifetime, once the cluster runs", profile.name),
                }),
            ));
        }
        Ok(Plan::new("deploy", branch, plan))
    }
}
