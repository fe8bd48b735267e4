//! The Lambda glue shared by every function binary: build clients once, parse each event into a
//! validated request, run the service, and answer with its response or a contract `errorType`.

use std::sync::Arc;

use jiff::Timestamp;
use lambda_runtime::layers::TracingLayer;
use lambda_runtime::tower::util::MapRequestLayer;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent, LambdaInvocation, Runtime};
use serde_json::Value;

use crate::aws::CallLog;
use crate::catalog::Catalog;
use crate::domain::requests::MALFORMED_JSON_KEY;
#[cfg(feature = "lambda")]
use crate::domain::{ClusterRequest, DeployRequest, ScheduleDestroyRequest};
use crate::error::Error;
use crate::ports::SystemClock;
#[cfg(feature = "lambda-runs")]
use crate::runner::{RunKind, RunRequest};
#[cfg(feature = "lambda-runs")]
use crate::service::run::{RunSettings, Runner};
use crate::service::Invocation;
#[cfg(feature = "lambda")]
use crate::service::{Provisioner, Timeouts};

/// The cluster-lifecycle functions of the spec, by their logical names.
#[cfg(feature = "lambda")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Deploy,
    ScheduleDestroy,
    Destroy,
}

#[cfg(feature = "lambda")]
impl Function {
    pub fn name(self) -> &'static str {
        match self {
            Function::Deploy => "deploy",
            Function::ScheduleDestroy => "schedule_destroy",
            Function::Destroy => "destroy",
        }
    }
}

/// A failure as Lambda reports it: `errorType` is the contract code.
#[derive(Debug)]
pub struct Failure(pub Error);

impl From<Failure> for Diagnostic {
    fn from(failure: Failure) -> Diagnostic {
        Diagnostic { error_type: failure.0.code().to_owned(), error_message: failure.0.to_string() }
    }
}

/// Runs one cluster-lifecycle function until the Lambda service stops the process.
#[cfg(feature = "lambda")]
pub async fn serve(function: Function) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let calls = CallLog::default();
    let provisioner = provisioner_from_env(&calls).await.map_err(|why| {
        tracing::error!(function = function.name(), %why, "cannot start");
        why
    })?;
    let handler = service_fn(move |event: LambdaEvent<Value>| {
        let (provisioner, calls) = (provisioner.clone(), calls.clone());
        async move {
            let outcome = handle(&provisioner, function, event.payload, invocation_of(&event.context)).await;
            log_calls(function.name(), &calls);
            outcome
        }
    });
    Runtime::new(handler).layer(TracingLayer::new()).layer(MapRequestLayer::new(flag_malformed_json)).run().await
}

/// Runs the `test` or `build` function until the Lambda service stops the process.
#[cfg(feature = "lambda-runs")]
pub async fn serve_run(kind: RunKind) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let calls = CallLog::default();
    let runner = runner_from_env(kind, &calls).await.map_err(|why| {
        tracing::error!(function = kind.as_str(), %why, "cannot start");
        why
    })?;
    let handler = service_fn(move |event: LambdaEvent<Value>| {
        let (runner, calls) = (runner.clone(), calls.clone());
        async move {
            let outcome = handle_run(&runner, kind, event.payload, invocation_of(&event.context)).await;
            log_calls(kind.as_str(), &calls);
            outcome
        }
    });
    Runtime::new(handler).layer(TracingLayer::new()).layer(MapRequestLayer::new(flag_malformed_json)).run().await
}

/// Parses a `test` or `build` event, runs it, and logs the outcome once.
#[cfg(feature = "lambda-runs")]
pub async fn handle_run(runner: &Runner, kind: RunKind, event: Value, invocation: Invocation) -> Result<Value, Failure> {
    let outcome = match RunRequest::parse(event) {
        Ok(request) => runner.run(kind, request, &invocation).await.map(to_value),
        Err(error) => Err(error),
    };
    log_outcome(kind.as_str(), &invocation, &outcome);
    outcome.map_err(Failure)
}

/// One event per invocation naming every AWS call it made, in order.
fn log_calls(function: &str, calls: &CallLog) {
    let calls = calls.take();
    tracing::info!(function, aws_calls = calls.len(), operations = %calls.join(" "), "AWS calls");
}

fn log_outcome(function: &str, invocation: &Invocation, outcome: &Result<Value, Error>) {
    match outcome {
        Ok(response) => tracing::info!(function, request_id = %invocation.request_id, %response, "succeeded"),
        Err(error) => tracing::warn!(function, request_id = %invocation.request_id, error_type = error.code(), %error, "failed"),
    }
}

/// The runtime parses each payload itself and answers what it cannot parse with its own error
/// type (a payload that is not JSON on emulators, one nested beyond serde_json's 128 levels
/// anywhere), and silently keeps the last of duplicate keys. Turn each into an event our parser
/// refuses as InvalidRequest.
fn flag_malformed_json(mut invocation: LambdaInvocation) -> LambdaInvocation {
    if let Some(flagged) = screen_payload(&invocation.body) {
        invocation.body = flagged.into();
    }
    invocation
}

/// `None` for a payload the runtime parses as it is; otherwise the event that says why not.
pub(crate) fn screen_payload(body: &[u8]) -> Option<Vec<u8>> {
    let error = serde_json::from_slice::<StrictJson>(body).err()?;
    let reason = if error.to_string().starts_with("recursion limit exceeded") {
        "it is nested more than 127 levels deep".to_owned()
    } else {
        error.to_string()
    };
    Some(serde_json::json!({ MALFORMED_JSON_KEY: reason }).to_string().into_bytes())
}

/// Any JSON value with no object holding the same key twice, parsed as the runtime parses events
/// (the same parser, so the same depth limit).
struct StrictJson;

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictJson)
    }
}

impl<'de> serde::de::Visitor<'de> for StrictJson {
    type Value = StrictJson;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<StrictJson, E> {
        Ok(StrictJson)
    }

    fn visit_i64<E>(self, _: i64) -> Result<StrictJson, E> {
        Ok(StrictJson)
    }

    fn visit_u64<E>(self, _: u64) -> Result<StrictJson, E> {
        Ok(StrictJson)
    }

    fn visit_f64<E>(self, _: f64) -> Result<StrictJson, E> {
        Ok(StrictJson)
    }

    fn visit_str<E>(self, _: &str) -> Result<StrictJson, E> {
        Ok(StrictJson)
    }

    fn visit_unit<E>(self) -> Result<StrictJson, E> {
        Ok(StrictJson)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<StrictJson, A::Error> {
        while items.next_element::<StrictJson>()?.is_some() {}
        Ok(StrictJson)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<StrictJson, A::Error> {
        let mut keys = std::collections::HashSet::new();
        while let Some(key) = entries.next_key::<String>()? {
            if !keys.insert(key.clone()) {
                let key = crate::domain::names::shown(&key);
                return Err(serde::de::Error::custom(format_args!("the key {key} appears twice in one object")));
            }
            entries.next_value::<StrictJson>()?;
        }
        Ok(StrictJson)
    }
}

fn invocation_of(context: &lambda_runtime::Context) -> Invocation {
    let deadline = i64::try_from(context.deadline).ok().and_then(|ms| Timestamp::from_millisecond(ms).ok()).unwrap_or_else(|| {
        // Not a reason to give up at once; a short deadline still answers in time.
        tracing::warn!(deadline_ms = context.deadline, "the invocation's deadline is unreadable; assuming one minute");
        Timestamp::now() + jiff::SignedDuration::from_mins(1)
    });
    Invocation { request_id: context.request_id.clone(), deadline }
}

/// Parses `event` for `function`, runs it, and logs the outcome once.
#[cfg(feature = "lambda")]
pub async fn handle(provisioner: &Provisioner, function: Function, event: Value, invocation: Invocation) -> Result<Value, Failure> {
    let outcome = run(provisioner, function, event, &invocation).await;
    log_outcome(function.name(), &invocation, &outcome);
    outcome.map_err(Failure)
}

#[cfg(feature = "lambda")]
async fn run(provisioner: &Provisioner, function: Function, event: Value, invocation: &Invocation) -> Result<Value, Error> {
    let response = match function {
        Function::Deploy => to_value(provisioner.deploy(DeployRequest::parse(event)?, invocation).await?),
        Function::Destroy => to_value(provisioner.destroy(ClusterRequest::parse(event)?, invocation).await?),
        Function::ScheduleDestroy => {
            let request = ScheduleDestroyRequest::parse(event, provisioner.clock.now())?;
            to_value(provisioner.schedule_destroy(request, invocation).await?)
        }
    };
    Ok(response)
}

fn to_value<T: serde::Serialize>(response: T) -> Value {
    serde_json::to_value(response).unwrap_or_else(|e| serde_json::json!({"status": "success", "note": e.to_string()}))
}

/// Settings read from the environment (set by template.yaml, or by the local stack).
pub const TABLE_ENV: &str = "PROVISIONER_TABLE";
pub const SCHEDULE_GROUP_ENV: &str = "PROVISIONER_SCHEDULE_GROUP";
pub const DESTROY_FUNCTION_ARN_ENV: &str = "PROVISIONER_DESTROY_FUNCTION_ARN";
pub const SCHEDULER_ROLE_ARN_ENV: &str = "PROVISIONER_SCHEDULER_ROLE_ARN";
pub const DEAD_LETTER_ARN_ENV: &str = "PROVISIONER_DEAD_LETTER_ARN";

/// Settings of the TEST and BUILD functions.
pub const RUN_LOG_BUCKET_ENV: &str = "PROVISIONER_RUN_LOG_BUCKET";
pub const REPOSITORY_URL_ENV: &str = "PROVISIONER_REPOSITORY_URL";
pub const BUILD_IMAGE_ENV: &str = "PROVISIONER_BUILD_IMAGE";
pub const CONTAINER_REGISTRY_ENV: &str = "PROVISIONER_CONTAINER_REGISTRY";
pub const DOMAIN_ENV: &str = "PROVISIONER_DOMAIN";
pub const PROJECT_BUCKET_ENV: &str = "PROVISIONER_PROJECT_BUCKET";
pub const PROJECT_FOLDER_ENV: &str = "PROVISIONER_PROJECT_FOLDER";
pub const HOSTED_ZONE_ID_ENV: &str = "PROVISIONER_HOSTED_ZONE_ID";
pub const JWT_ISSUER_ENV: &str = "PROVISIONER_JWT_ISSUER";
pub const PUBLIC_DATA_BUCKETS_ENV: &str = "PROVISIONER_PUBLIC_DATA_BUCKETS";
pub const ALERT_STREAM_ENV: &str = "PROVISIONER_ALERT_STREAM";
pub const TELEMETRY_STREAM_ENV: &str = "PROVISIONER_TELEMETRY_STREAM";

/// The account's settings that cluster stacks take as parameters, by the environment variable
/// (set from the provisioner template's parameters) that carries each.
pub const CLUSTER_SETTING_ENVS: &[(&str, &str)] = &[
    ("Domain", DOMAIN_ENV),
    ("HostedZoneId", HOSTED_ZONE_ID_ENV),
    ("ContainerRegistry", CONTAINER_REGISTRY_ENV),
    ("ProjectBucket", PROJECT_BUCKET_ENV),
    ("ProjectFolder", PROJECT_FOLDER_ENV),
    ("JwtIssuer", JWT_ISSUER_ENV),
    ("PublicDataBuckets", PUBLIC_DATA_BUCKETS_ENV),
    ("AlertStream", ALERT_STREAM_ENV),
    ("TelemetryStream", TELEMETRY_STREAM_ENV),
];
/// The Secrets Manager secret (name or ARN) holding the GitHub token of the client tests.
pub const GITHUB_TOKEN_SECRET_ENV: &str = "PROVISIONER_GITHUB_TOKEN_SECRET";
/// Each run kind launches with its own instance profile: only BUILD's may push images.
pub const TEST_RUNNER_INSTANCE_PROFILE_ENV: &str = "PROVISIONER_TEST_RUNNER_INSTANCE_PROFILE";
pub const BUILD_RUNNER_INSTANCE_PROFILE_ENV: &str = "PROVISIONER_BUILD_RUNNER_INSTANCE_PROFILE";
pub const RUNNER_SUBNETS_ENV: &str = "PROVISIONER_RUNNER_SUBNETS";
pub const RUNNER_SECURITY_GROUPS_ENV: &str = "PROVISIONER_RUNNER_SECURITY_GROUPS";

/// A client of one SDK crate whose calls are recorded in a [`CallLog`].
macro_rules! logged_client {
    ($sdk:ident, $config:expr, $calls:expr) => {
        $sdk::Client::from_conf($sdk::config::Builder::from($config).interceptor($calls.clone()).build())
    };
}

/// Builds the runner of TEST and BUILD over AWS, from the environment.
#[cfg(feature = "lambda-runs")]
pub async fn runner_from_env(kind: RunKind, calls: &CallLog) -> Result<Runner, String> {
    use crate::aws::{dynamodb::DynamoStore, ec2::Ec2Instances, optional_setting, sdk_config, setting};

    let list = |name: &str| -> Vec<String> {
        optional_setting(name).map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()).unwrap_or_default()
    };
    let config = sdk_config().await;
    let region = config.region().map(|r| r.to_string()).ok_or("no AWS region is configured (AWS_REGION)")?;
    let table = setting(TABLE_ENV)?;
    let settings = RunSettings {
        region,
        table: table.clone(),
        log_bucket: setting(RUN_LOG_BUCKET_ENV)?,
        repository: setting(REPOSITORY_URL_ENV)?,
        build_image: setting(BUILD_IMAGE_ENV)?,
        registry: setting(CONTAINER_REGISTRY_ENV)?,
        domain: setting(DOMAIN_ENV)?,
        project_bucket: optional_setting(PROJECT_BUCKET_ENV).unwrap_or_default(),
        project_folder: optional_setting(PROJECT_FOLDER_ENV).unwrap_or_default(),
        github_token_secret: optional_setting(GITHUB_TOKEN_SECRET_ENV),
        instance_profile: optional_setting(match kind {
            RunKind::Test => TEST_RUNNER_INSTANCE_PROFILE_ENV,
            RunKind::Build => BUILD_RUNNER_INSTANCE_PROFILE_ENV,
        }),
        subnets: list(RUNNER_SUBNETS_ENV),
        security_groups: list(RUNNER_SECURITY_GROUPS_ENV),
    };
    Ok(Runner {
        catalog: Arc::new(Catalog::shipped().map_err(|e| e.to_string())?),
        runs: Arc::new(DynamoStore::new(logged_client!(aws_sdk_dynamodb, &config, calls), table)),
        instances: Arc::new(Ec2Instances::new(logged_client!(aws_sdk_ec2, &config, calls), logged_client!(aws_sdk_ssm, &config, calls))),
        clock: Arc::new(SystemClock),
        settings,
        poll: crate::service::run::RUN_POLL_INTERVAL,
        deadline_margin: crate::service::DEADLINE_MARGIN,
    })
}

/// Builds the provisioner over AWS, from the environment.
#[cfg(feature = "lambda")]
pub async fn provisioner_from_env(calls: &CallLog) -> Result<Provisioner, String> {
    use crate::aws::{cloudformation::CloudFormationStacks, dynamodb::DynamoStore, optional_setting, scheduler::*, sdk_config, setting};

    let catalog = Catalog::shipped().map_err(|e| e.to_string())?;
    let table = setting(TABLE_ENV)?;
    let target = ScheduleTarget {
        group: setting(SCHEDULE_GROUP_ENV)?,
        destroy_function_arn: setting(DESTROY_FUNCTION_ARN_ENV)?,
        role_arn: setting(SCHEDULER_ROLE_ARN_ENV)?,
        dead_letter_arn: optional_setting(DEAD_LETTER_ARN_ENV),
    };
    let mut settings: crate::catalog::ClusterSettings =
        CLUSTER_SETTING_ENVS.iter().filter_map(|(parameter, env)| Some(((*parameter).to_owned(), optional_setting(env)?))).collect();
    settings.insert("EnvironmentVersion".into(), concat!("sliderule-provisioner-", env!("CARGO_PKG_VERSION")).into());
    let config = sdk_config().await;
    #[cfg(feature = "ecr")]
    let images = Arc::new(crate::aws::ecr::EcrImages::new(config.clone(), calls.clone()));
    #[cfg(not(feature = "ecr"))]
    let images = Arc::new(NoRegistry);
    Ok(Provisioner {
        catalog: Arc::new(catalog),
        stacks: Arc::new(CloudFormationStacks::new(logged_client!(aws_sdk_cloudformation, &config, calls))),
        schedules: Arc::new(EventBridgeSchedules::new(logged_client!(aws_sdk_scheduler, &config, calls), target)),
        locks: Arc::new(DynamoStore::new(logged_client!(aws_sdk_dynamodb, &config, calls), table)),
        images,
        clock: Arc::new(SystemClock),
        timeouts: Timeouts::default(),
        settings,
    })
}

/// What the functions other than `deploy` have for a registry: they never ask it anything, and
/// link no registry client.
#[cfg(all(feature = "lambda", not(feature = "ecr")))]
struct NoRegistry;

#[cfg(all(feature = "lambda", not(feature = "ecr")))]
#[async_trait::async_trait]
impl crate::ports::Images for NoRegistry {
    async fn missing(&self, _: &str, _: &[String], _: &crate::domain::ImageTag) -> crate::Result<Vec<String>> {
        Err(Error::DeployFailed("this function links no registry client; only deploy checks images".into()))
    }
}

#[cfg(all(test, feature = "lambda"))]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::World;

    #[tokio::test(start_paused = true)]
    async fn failures_carry_the_contract_code_and_a_sentence() {
        let world = World::new("2026-11-23T12:00:00Z");
        let cases = [
            (Function::Deploy, json!({"cluster": "ci-1", "extra": 1}), "InvalidRequest"),
            (Function::Deploy, json!("ci-1"), "InvalidRequest"),
            (Function::Deploy, json!({"cluster": "ci-1", "version": "a;b"}), "InvalidRequest"),
            (Function::Deploy, json!({"cluster": "ci-1", "version": "feature/x"}), "InvalidRequest"),
            (Function::Deploy, json!({"cluster": "ci-1", "version": "v0.0.1"}), "ImagesMissing"),
            (Function::Destroy, json!({"cluster": "ci-1", "version": "main"}), "InvalidRequest"),
            (Function::Destroy, json!({"cluster": "ci;reboot"}), "InvalidRequest"),
            (Function::Destroy, json!({"cluster": "other"}), "UnknownCluster"),
            (Function::ScheduleDestroy, json!({"cluster": "ci-1", "time_to_destroy": "2020-01-01T00:00:00Z"}), "InvalidRequest"),
        ];
        for (function, event, code) in cases {
            let failure = handle(&world.provisioner, function, event.clone(), world.invocation("r")).await.unwrap_err();
            let diagnostic = Diagnostic::from(failure);
            assert_eq!(diagnostic.error_type, code, "{event}");
            let message = &diagnostic.error_message;
            assert!(!message.is_empty() && !message.contains('\n') && message.len() < 400, "{message}");
        }
        // Nothing was created: bad events make no call at all, missing images only look.
        assert!(world.stacks.created().is_empty() && world.schedules.all().is_empty());
        assert_eq!(world.stacks.calls().len(), 2, "one describe before and one under the lock: {:?}", world.stacks.calls());
    }

    /// What the runtime does with a payload: our screen, then its own parse into a `Value`.
    fn as_the_runtime_parses(payload: &str) -> Value {
        let body = screen_payload(payload.as_bytes()).unwrap_or_else(|| payload.as_bytes().to_vec());
        serde_json::from_slice(&body).expect("the runtime parses every screened payload")
    }

    #[tokio::test(start_paused = true)]
    async fn payloads_the_runtime_cannot_take_as_they_are_answer_invalid_request() {
        let world = World::new("2026-11-23T12:00:00Z");
        let nested = |depth: usize, inner: &str| format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth));
        let deep_object = format!(r#"{{"cluster": {}"developers"{}}}"#, r#"{"a":"#.repeat(130), "}".repeat(130));
        let cases = [
            (nested(200, "1"), "127 levels"),
            (nested(127, r#"{"cluster":"developers"}"#), "127 levels"),
            (deep_object, "127 levels"),
            (r#"{"cluster":"developers","cluster":"ci-1"}"#.to_owned(), "'cluster' appears twice"),
            (r#"{"cluster":"developers","x":{"a":1,"a":2}}"#.to_owned(), "'a' appears twice"),
            ("{\"cluster\":".to_owned(), "not valid JSON"),
        ];
        for (payload, reason) in cases {
            for function in [Function::Deploy, Function::ScheduleDestroy, Function::Destroy] {
                let event = as_the_runtime_parses(&payload);
                let failure = handle(&world.provisioner, function, event, world.invocation("r")).await.unwrap_err();
                let diagnostic = Diagnostic::from(failure);
                assert_eq!(diagnostic.error_type, "InvalidRequest", "{payload:.60}");
                assert!(diagnostic.error_message.contains(reason), "{}", diagnostic.error_message);
            }
            // TEST and BUILD parse their events the same way.
            let refused = crate::runner::RunRequest::parse(as_the_runtime_parses(&payload)).unwrap_err();
            assert_eq!(refused.code(), "InvalidRequest", "{payload:.60}");
        }
        // Nesting within the limit, and the same key in different objects, are fine.
        assert!(screen_payload(nested(100, "1").as_bytes()).is_none());
        assert!(screen_payload(br#"{"cluster":"developers","x":{"cluster":1}}"#).is_none());
        assert!(world.stacks.calls().is_empty(), "nothing was asked of AWS: {:?}", world.stacks.calls());
    }

    #[tokio::test(start_paused = true)]
    async fn responses_follow_the_contract() {
        let world = World::new("2026-11-23T12:00:00Z");
        let deployed =
            handle(&world.provisioner, Function::Deploy, json!({"cluster": "developers"}), world.invocation("r1")).await.unwrap();
        assert_eq!((deployed["status"].as_str(), deployed["cluster"].as_str()), (Some("success"), Some("developers")));
        assert_eq!(deployed["version"], "latest");
        let scheduled = handle(
            &world.provisioner,
            Function::ScheduleDestroy,
            json!({"cluster": "developers", "time_to_destroy": "2026-11-23T16:00:00+02:00"}),
            world.invocation("r2"),
        )
        .await
        .unwrap();
        assert_eq!(scheduled["time_to_destroy"], "2026-11-23T14:00:00Z");
        let destroyed =
            handle(&world.provisioner, Function::Destroy, json!({"cluster": "developers"}), world.invocation("r3")).await.unwrap();
        assert_eq!((destroyed["status"].as_str(), destroyed["cluster"].as_str()), (Some("success"), Some("developers")));
    }
}
