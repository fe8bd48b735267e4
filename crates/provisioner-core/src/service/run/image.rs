//! RUNNER_IMAGE: a run of the TEST plan's host-tool steps whose instance, once they passed, is
//! made into an AMI (then terminated): the image TEST runs launch from (`launch.rs` chooses it).
//! The rules of choice and retirement are in [`crate::domain::runner_image`].

use super::*;
use crate::domain::runner_image::{image_name, image_tags};
use crate::domain::{RunKind, RunRecord, RunRequest, RunState, RunnerImageRequest};
use crate::error::{AwsErrorKind, Result};
use crate::service::plan::Plan;
use crate::service::Invocation;

impl Runner {
    /// RUNNER_IMAGE: starts the image run of the architecture asked (the catalog's TEST one by
    /// default), or answers the active one; then waits as `test` does.
    pub async fn runner_image(&self, request: RunnerImageRequest, invocation: &Invocation) -> Result<RunResponse> {
        self.run(RunKind::RunnerImage, self.image_run_request(request)?, invocation).await
    }

    /// DRY_RUN of RUNNER_IMAGE: the run it would start, as a TEST or BUILD plan says.
    pub async fn plan_runner_image(&self, request: &RunnerImageRequest) -> Result<Plan> {
        self.plan(RunKind::RunnerImage, &self.image_run_request(request.clone())?).await
    }

    /// The run a runner image request starts or resumes: the catalog's image run.
    fn image_run_request(&self, request: RunnerImageRequest) -> Result<RunRequest> {
        Ok(match request {
            RunnerImageRequest::Start { architecture, wait_seconds, requested_by } => {
                let (image_run, _) = self.catalog.runner_image(architecture.as_deref())?;
                RunRequest::Start {
                    cluster: image_run.cluster.clone(),
                    version: image_run.version.clone(),
                    wait_seconds,
                    hold_minutes: 0,
                    requested_by,
                }
            }
            RunnerImageRequest::Resume { run_id, wait_seconds } => RunRequest::Resume { run_id, wait_seconds },
        })
    }

    /// A runner image run whose steps passed: makes the image of its instance (once: an image
    /// already tagged with the run is the one), and ends the run when the image is available,
    /// terminating the instance. A failed image, or an instance gone before it was imaged, fails
    /// the run.
    pub(super) async fn make_image(&self, record: &mut RunRecord) -> Result<()> {
        let Some(instance_id) = record.instance_id.clone() else {
            let why = "its steps passed, but it has no instance recorded to image".to_owned();
            return self.conclude(record, RunState::Failed, Some(why)).await;
        };
        let profile = self.catalog.profile_for(&record.cluster)?;
        let architecture = profile.runner.architecture.clone();
        let mut images = self.ports.instances.runner_images().await?;
        if record.runner_image.is_none() {
            let made = images.iter().find(|image| image.run_id.as_ref() == Some(&record.run_id));
            let image_id = match made {
                Some(image) => image.id.clone(),
                None => {
                    let hash = self.catalog.plans().runner_image.hash();
                    let name = image_name(&architecture, &record.run_id);
                    let build_image = &self.settings.build_image;
                    let mut tags =
                        image_tags(&architecture, &hash, build_image, &record.run_id, self.ports.clock.now());
                    tags.extend(record.holds.clone().unwrap_or_default().tags());
                    match self.ports.instances.create_image(&instance_id, &name, &tags).await {
                        Ok(id) => id,
                        Err(error) if error.aws_kind() == Some(AwsErrorKind::NotFound) => {
                            let why = format!("its instance {instance_id} was gone before it could be imaged");
                            return self.conclude(record, RunState::Failed, Some(why)).await;
                        }
                        Err(error) => return Err(error),
                    }
                }
            };
            tracing::info!(run_id = %record.run_id, %image_id, %instance_id, "imaging the runner instance");
            record.runner_image = Some(image_id);
            self.ports.runs.update(record).await?;
            // A small image may be available at once; EC2 may also list a new image a moment later.
            images = self.ports.instances.runner_images().await?;
        }
        let image_id = record.runner_image.clone().unwrap_or_default();
        let state = images.iter().find(|image| image.id == image_id).map(|image| image.state.as_str());
        match state {
            Some("available") => self.conclude(record, RunState::Succeeded, None).await,
            // Being made, or not listed yet: EC2 lists a new image a moment after making it.
            Some("pending") | None if self.ports.clock.now() < record.deadline => Ok(()),
            other => {
                let why = format!("its image {image_id} is {}", other.unwrap_or("not listed by the run's time limit"));
                self.conclude(record, RunState::Failed, Some(why)).await
            }
        }
    }
}
