//! Launching an attempt's instance: the image it boots, type by type and subnet by subnet in its
//! market, a launch whose outcome is unclear resolved by its token and tag, the instance adopted
//! into the run's record; an attempt no market had capacity for followed by the next.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::catalog::Profile;
use crate::domain::attempt::{describe_all, instance_log_location};
use crate::domain::launch_log::LaunchOutcome;
use crate::domain::runner_image::choose;
use crate::domain::tags;
use crate::domain::{AttemptOutcome, UserData};
use crate::domain::{RunKind, RunRecord, RunState};
use crate::error::{AwsErrorKind, Error, Result};
use crate::ports::LaunchSpec;

/// Launch calls per choice of instance type and subnet while the outcome is unclear.
const LAUNCH_ATTEMPTS: u32 = 3;

const LAUNCH_RETRY_PAUSE: Duration = Duration::from_secs(2);

/// Writes of a launched instance's id before leaving it to the wait.
const RECORD_ATTEMPTS: u32 = 3;

/// Between launches of attempts that found no capacity: long enough for the market to move.
const CAPACITY_RETRY_PAUSE: Duration = Duration::from_secs(20);

/// Where a launch refused for capacity goes on, and why it was refused.
enum Refusal {
    NextType(String),
    NextSubnet(String),
}

/// How a launch ended that was not refused.
enum Launched {
    Instance(String),
    /// It may or may not have launched, and no instance is seen yet.
    Unknown,
}

/// How an attempt's launch ended.
pub(super) enum AttemptLaunch {
    /// Launched, or perhaps launched: the wait finds it by its tag.
    Started,
    /// No type, subnet or market had capacity: why each was refused.
    NoCapacity(Vec<String>),
}

/// The tags of the instance and volume of a run's current attempt. It expires at the attempt's
/// time limit, plus the hold a failed run may keep it for.
fn instance_tags(record: &RunRecord) -> Vec<(String, String)> {
    let limit = record.current_attempt().map_or(record.deadline, |attempt| attempt.deadline);
    let expires = limit + SignedDuration::from_mins(i64::from(record.hold_minutes));
    vec![
        ("Name".into(), format!("sliderule-{}", record.run_id)),
        (tags::RUN_ID.into(), record.run_id.to_string()),
        (tags::ATTEMPT.into(), record.attempt_number().to_string()),
        (tags::KIND.into(), record.kind.to_string()),
        (tags::CLUSTER.into(), record.cluster.to_string()),
        (tags::EXPIRES.into(), expires.to_string()),
        (tags::PROVISIONER.into(), "true".into()),
    ]
    .into_iter()
    .chain(record.requested_by.as_ref().map(|who| (tags::REQUESTED_BY.into(), who.as_str().to_owned())))
    .collect()
}

impl Runner {
    /// Launches the current attempt; an attempt no market had capacity for ends as `capacity` and
    /// the next follows after a pause, until none is left: then the run ends `CapacityUnavailable`
    /// naming every attempt.
    pub(super) async fn launch_attempts(
        &self,
        record: &mut RunRecord,
        profile: &Profile,
        mut user_data: UserData,
    ) -> Result<()> {
        loop {
            let refused = match self.launch(record, profile, &user_data).await? {
                AttemptLaunch::Started => return Ok(()),
                AttemptLaunch::NoCapacity(refused) => refused,
            };
            let why = format!("no capacity ({})", refused.join(", "));
            if record.attempt_number() >= profile.runner.max_attempts {
                record.end_attempt(AttemptOutcome::Capacity, Some(self.ports.clock.now()));
                let error = Error::CapacityUnavailable(format!(
                    "{} run {} was not started: {why} in each of its {} attempt(s) ({}); try again later or add \
                     instance types to the profile",
                    record.kind,
                    record.run_id,
                    record.attempts.len(),
                    describe_all(&record.attempts)
                ));
                return Err(self.abandon(record, RunState::CapacityUnavailable, error).await);
            }
            self.ports.clock.sleep(CAPACITY_RETRY_PAUSE).await;
            match self.begin_next_attempt(record, profile, AttemptOutcome::Capacity, &why).await? {
                Some(next) => user_data = next,
                None => return Ok(()),
            }
        }
    }

    /// Launches the current attempt's instance: zone by zone (subnet), the profile's instance types
    /// in order, in the attempt's market; a capacity refusal moves on to the next type, a subnet
    /// refusal to the next subnet, a quota ends the run at once. A spot attempt that no type or
    /// subnet has capacity for falls back to on-demand when the profile allows.
    pub(super) async fn launch(
        &self,
        record: &mut RunRecord,
        profile: &Profile,
        user_data: &UserData,
    ) -> Result<AttemptLaunch> {
        let image_id = match self.launch_image(record, profile).await {
            Ok(image) => image,
            Err(error) => return Err(self.abandon(record, RunState::Failed, error).await),
        };
        let subnets: Vec<Option<&String>> = if self.settings.subnets.is_empty() {
            vec![None]
        } else {
            self.settings.subnets.iter().map(Some).collect()
        };
        let (instance_types, markets) = self.launch_choices(record, profile).await;
        let mut refused = Vec::new();
        let mut choice = 0;
        for market in markets {
            if let Some(attempt) = record.attempts.last_mut() {
                attempt.market = market;
            }
            for subnet in &subnets {
                for instance_type in &instance_types {
                    let spec = LaunchSpec {
                        image_id: image_id.clone(),
                        instance_type: instance_type.clone(),
                        market,
                        subnet_id: subnet.cloned(),
                        security_group_ids: self.settings.security_groups.clone(),
                        instance_profile: self.settings.instance_profile(record.kind).cloned(),
                        user_data: user_data.clone(),
                        volume_gb: profile.runner.volume_gb,
                        tags: instance_tags(record),
                        client_token: record.run_id.launch_token(record.attempt_number(), choice),
                    };
                    choice += 1;
                    match self.try_launch(record, &spec).await? {
                        None => return Ok(AttemptLaunch::Started),
                        Some(Refusal::NextType(why)) => refused.push(why),
                        Some(Refusal::NextSubnet(why)) => {
                            refused.push(why);
                            break;
                        }
                    }
                }
            }
        }
        Ok(AttemptLaunch::NoCapacity(refused))
    }

    /// Launches one choice of type, subnet and market: `None` when it launched (its instance
    /// adopted) or may have (the wait finds it by its tag, or ends the attempt when none appears),
    /// else why it was refused.
    async fn try_launch(&self, record: &mut RunRecord, spec: &LaunchSpec) -> Result<Option<Refusal>> {
        if let Err(error) = self.count_attempt(record, &spec.instance_type).await {
            return Err(self.abandon(record, RunState::Failed, error).await);
        }
        let error = match self.launch_resolved(record, spec).await {
            Ok(Launched::Instance(instance_id)) => {
                let (instance_type, market) = (&spec.instance_type, spec.market);
                tracing::info!(run_id = %record.run_id, %instance_id, %instance_type, %market,
                    attempt = record.attempt_number(), "run instance launched");
                if let Some(attempt) = record.attempts.last_mut() {
                    attempt.instance_type = Some(instance_type.clone());
                }
                self.adopt(record, instance_id).await;
                return Ok(None);
            }
            Ok(Launched::Unknown) => {
                tracing::warn!(run_id = %record.run_id, "could not tell whether the instance launched; looking for \
                    it by tag");
                return Ok(None);
            }
            Err(error) => error,
        };
        self.refused(record, spec, error).await.map(Some)
    }

    /// What a refused launch means: try the next type or subnet (saying why), or end the run
    /// (an account quota, or a refusal that is not about capacity).
    async fn refused(&self, record: &mut RunRecord, spec: &LaunchSpec, error: Error) -> Result<Refusal> {
        let kind = error.aws_kind();
        if !matches!(kind, Some(AwsErrorKind::Capacity | AwsErrorKind::Subnet | AwsErrorKind::Quota)) {
            return Err(self.abandon(record, RunState::Failed, error).await);
        }
        let code = match &error {
            Error::Aws(failure) => failure.code.clone(),
            other => other.code().to_owned(),
        };
        let (instance_type, subnet) = (&spec.instance_type, &spec.subnet_id);
        tracing::warn!(run_id = %record.run_id, %instance_type, ?subnet, %code, ?kind, "launch refused");
        let outcome = LaunchOutcome::Refused { code: code.clone() };
        self.note_launch(record, instance_type, spec.market, subnet.clone(), outcome).await;
        let place = subnet.as_ref().map(|s| format!(" in {s}")).unwrap_or_default();
        let why = format!("{instance_type} ({}){place}: {code}", spec.market);
        match kind {
            Some(AwsErrorKind::Quota) => {
                let error = Error::CapacityUnavailable(format!(
                    "{} run {} was not started: the account reached a quota ({code}); wait for other instances to \
                     end, or raise the quota",
                    record.kind, record.run_id
                ));
                Err(self.abandon(record, RunState::CapacityUnavailable, error).await)
            }
            Some(AwsErrorKind::Subnet) => Ok(Refusal::NextSubnet(why)),
            _ => Ok(Refusal::NextType(why)),
        }
    }

    /// Launches `spec`. A failure that does not prove nothing was launched (no answer, a 5xx) is
    /// resolved: the same client token launches no second instance, so the launch is asked again;
    /// then the instance is looked for by its run-id tag. An error is a definite refusal.
    async fn launch_resolved(&self, record: &RunRecord, spec: &LaunchSpec) -> Result<Launched> {
        let mut pause = LAUNCH_RETRY_PAUSE;
        for attempt in 1..=LAUNCH_ATTEMPTS {
            match self.ports.instances.launch(spec).await {
                Ok(instance_id) => return Ok(Launched::Instance(instance_id)),
                // Throttled launched nothing but may go through in a moment; the same token keeps
                // an indeterminate one from launching twice.
                Err(error)
                    if matches!(error.aws_kind(), Some(AwsErrorKind::Indeterminate | AwsErrorKind::Throttled)) =>
                {
                    tracing::warn!(run_id = %record.run_id, attempt, %error, "launch answered nothing definite; \
                        asking again with the same token");
                }
                Err(error) => return Err(error),
            }
            // Also after the last attempt: an instance it launched takes a moment to be listed.
            self.ports.clock.sleep(pause).await;
            pause *= 2;
        }
        // Any attempt may have been the indeterminate kind.
        Ok(self.find_instance(record).await.map_or(Launched::Unknown, Launched::Instance))
    }

    /// The current attempt's instance found by tag (its others, if any, are terminated).
    pub(super) async fn find_instance(&self, record: &RunRecord) -> Option<String> {
        let found = match self.ports.instances.of_run(&record.run_id).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(run_id = %record.run_id, %error, "could not look for the run's instance");
                return None;
            }
        };
        let mut found: Vec<String> = found
            .into_iter()
            .filter(|instance| instance.attempt() == record.attempt_number().max(1))
            .map(|instance| instance.id)
            .collect();
        found.sort();
        let kept = found.first().cloned()?;
        for extra in &found[1..] {
            tracing::warn!(run_id = %record.run_id, instance_id = %extra, "a second instance of the run; terminating \
                it");
            self.terminate_stray(record, extra).await;
        }
        Some(kept)
    }

    /// Terminates an instance the run does not keep, trying again on failure; one that still
    /// cannot be terminated stops at the run's time limit, and ending the run terminates it.
    async fn terminate_stray(&self, record: &RunRecord, instance_id: &str) {
        let mut pause = LAUNCH_RETRY_PAUSE;
        for attempt in 1..=RECORD_ATTEMPTS {
            match self.ports.instances.terminate(instance_id).await {
                Ok(()) => return,
                Err(error) if attempt == RECORD_ATTEMPTS => {
                    tracing::warn!(run_id = %record.run_id, instance_id, %error, "could not terminate it; it stops at \
                        its time limit");
                }
                Err(_) => {
                    self.ports.clock.sleep(pause).await;
                    pause *= 2;
                }
            }
        }
    }

    /// Records `instance_id` as the run's instance. When the record cannot be written, the wait
    /// (this invocation's or the next's) finds the instance by its tag; when the run has ended
    /// meanwhile, the instance is terminated.
    pub(super) async fn adopt(&self, record: &mut RunRecord, instance_id: String) {
        // Where the instance writes its logs: the prefix named by its caller id, the one its role may write.
        record.log_location = (self.settings.runner_roles.caller(record.kind, &instance_id))
            .map(|caller| instance_log_location(&self.settings.log_bucket, &caller))
            .unwrap_or_default();
        record.instance_id = Some(instance_id.clone());
        if let Some(attempt) = record.attempts.last_mut() {
            attempt.instance_id = Some(instance_id.clone());
            attempt.log_location = record.log_location.clone();
        }
        record.state = RunState::Running;
        let mut pause = LAUNCH_RETRY_PAUSE;
        for attempt in 1..=RECORD_ATTEMPTS {
            match self.ports.runs.update(record).await {
                Ok(()) => return,
                Err(error) if error.aws_kind() == Some(AwsErrorKind::Conflict) => {
                    tracing::warn!(run_id = %record.run_id, %instance_id, "the run ended before its instance was \
                        recorded; terminating it");
                    self.terminate_stray(record, &instance_id).await;
                    return;
                }
                Err(error) if attempt < RECORD_ATTEMPTS => {
                    tracing::warn!(run_id = %record.run_id, %instance_id, %error, "could not record the instance; \
                        trying again");
                    self.ports.clock.sleep(pause).await;
                    pause *= 2;
                }
                Err(error) => {
                    tracing::warn!(run_id = %record.run_id, %instance_id, %error, "could not record the instance; the \
                        wait finds it by its tag");
                }
            }
        }
    }

    /// The runner image a `kind` run of `profile` launches from at `now`: for TEST, the newest of
    /// its architecture and plan within the profile's age; none for other runs, when none fits,
    /// or when the images cannot be listed (the run then installs its tools itself).
    pub(super) async fn runner_image_for(&self, kind: RunKind, profile: &Profile, now: Timestamp) -> Option<String> {
        if kind != RunKind::Test {
            return None;
        }
        let images = match self.ports.instances.runner_images().await {
            Ok(images) => images,
            Err(error) => {
                tracing::warn!(%error, "could not list the runner images; the run installs its tools itself");
                return None;
            }
        };
        let runner = &profile.runner;
        let hash = self.catalog.plans().runner_image.hash();
        let chosen = choose(&images, &runner.architecture, &hash, runner.runner_image_max_age_days, now);
        chosen.map(|image| image.id.clone())
    }

    /// The AMI a run's instance boots: its runner image, else the current Amazon Linux one.
    pub(super) async fn launch_image(&self, record: &RunRecord, profile: &Profile) -> Result<String> {
        match &record.runner_image {
            Some(image) if record.kind == RunKind::Test => Ok(image.clone()),
            _ => self.ports.instances.latest_image(&profile.runner.architecture).await,
        }
    }
}
