//! The Lambda glue every function binary shares: one generic [`serve`] that screens each payload,
//! hands the event to the function's handler (one per function below: parse the event into a
//! validated request, run the service), logs the outcome and the AWS calls once, and answers with
//! the response or the contract's `errorType` (an [`crate::Error`] becomes a [`Diagnostic`] by `From`).

use std::future::Future;

use jiff::Timestamp;
use lambda_runtime::layers::TracingLayer;
use lambda_runtime::tower::util::MapRequestLayer;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent, LambdaInvocation, Runtime};
use serde::Serialize;
use serde_json::Value;

use crate::aws::CallLog;
use crate::domain::requests::MALFORMED_JSON_KEY;
use crate::domain::{CancelRequest, InstanceEvent, RunKind, RunRequest, RunnerImageRequest};
use crate::domain::{ClusterRequest, DeployRequest, ScheduleDestroyRequest};
use crate::error::Result;
use crate::service::plan::Answer;
use crate::service::run::{CancelResponse, RunResponse, Runner};
use crate::service::status::StatusResponse;
use crate::service::survey::Operations;
use crate::service::sweeper::SweepResponse;
use crate::service::InstanceEventResponse;
use crate::service::{DeployResponse, DestroyResponse, Invocation, Provisioner, ScheduleDestroyResponse};

/// JSON logs, as CloudWatch reads them.
pub fn init_tracing() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// Serves `function` until the Lambda service stops the process: each event goes to
/// `handler(service.clone(), event, invocation)`.
pub async fn serve<S, H, F, R>(
    function: &'static str,
    calls: CallLog,
    service: S,
    handler: H,
) -> Result<(), lambda_runtime::Error>
where
    S: Clone + Send + Sync + 'static,
    H: Fn(S, Value, Invocation) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<R>> + Send,
    R: Serialize + Send + 'static,
{
    let lambda = service_fn(move |event: LambdaEvent<Value>| {
        let (service, handler, calls) = (service.clone(), handler.clone(), calls.clone());
        async move {
            let started = std::time::Instant::now();
            let invocation = invocation_of(&event.context);
            let outcome = answer(function, &invocation, handler(service, event.payload, invocation.clone())).await;
            let made = calls.take();
            log_calls(function, &made);
            crate::metrics::invocation(
                function,
                outcome.as_ref().map(|_| ()).map_err(|(_, e)| e),
                started.elapsed().as_secs_f64(),
                made.len(),
            );
            outcome.map(|response| with_calls_of_a_plan(response, made)).map_err(|(diagnostic, _)| diagnostic)
        }
    });
    Runtime::new(lambda).layer(TracingLayer::new()).layer(MapRequestLayer::new(flag_malformed_json)).run().await
}

/// Awaits one invocation's `outcome` and logs it once; an error comes with the contract's
/// diagnostic and the error itself (for the metrics).
pub async fn answer<R: Serialize>(
    function: &str,
    invocation: &Invocation,
    outcome: impl Future<Output = Result<R>>,
) -> Result<R, (Diagnostic, crate::Error)> {
    let outcome = outcome.await;
    match &outcome {
        Ok(response) => {
            let response = serde_json::to_string(response).unwrap_or_else(|e| format!("(not serializable: {e})"));
            tracing::info!(function, request_id = %invocation.request_id, %response, "succeeded");
        }
        Err(error) => {
            tracing::warn!(function, request_id = %invocation.request_id, error_type = error.code(), %error, "failed")
        }
    }
    outcome.map_err(|error| (Diagnostic::from(error.clone()), error))
}

/// DEPLOY(cluster): see `service/deploy.rs`; a dry run, `plan_deploy`.
pub async fn deploy(provisioner: Provisioner, event: Value, invocation: Invocation) -> Result<Answer<DeployResponse>> {
    let (event, dry_run) = dry_run_of(event)?;
    let request = DeployRequest::parse(event)?;
    if dry_run {
        return provisioner.plan_deploy(&request).await.map(Answer::Plan);
    }
    provisioner.deploy(request, &invocation).await.map(Answer::Done)
}

/// SCHEDULE_DESTROY(cluster, time_to_destroy): see `service/schedule_destroy.rs`.
pub async fn schedule_destroy(
    provisioner: Provisioner,
    event: Value,
    invocation: Invocation,
) -> Result<Answer<ScheduleDestroyResponse>> {
    let (event, dry_run) = dry_run_of(event)?;
    let request = ScheduleDestroyRequest::parse(event, provisioner.ports.clock.now())?;
    if dry_run {
        return provisioner.plan_schedule_destroy(&request).await.map(Answer::Plan);
    }
    provisioner.schedule_destroy(request, &invocation).await.map(Answer::Done)
}

/// DESTROY(cluster): see `service/destroy.rs`.
pub async fn destroy(
    provisioner: Provisioner,
    event: Value,
    invocation: Invocation,
) -> Result<Answer<DestroyResponse>> {
    let (event, dry_run) = dry_run_of(event)?;
    let request = ClusterRequest::parse(event)?;
    if dry_run {
        return provisioner.plan_destroy(&request).await.map(Answer::Plan);
    }
    provisioner.destroy(request, &invocation).await.map(Answer::Done)
}

/// TEST(cluster, version): see `service/run/` (`ask.rs`, `start.rs`).
pub async fn test(runner: Runner, event: Value, invocation: Invocation) -> Result<Answer<RunResponse>> {
    run(runner, RunKind::Test, event, invocation).await
}

/// BUILD(cluster, version): see `service/run/` (`ask.rs`, `start.rs`).
pub async fn build(runner: Runner, event: Value, invocation: Invocation) -> Result<Answer<RunResponse>> {
    run(runner, RunKind::Build, event, invocation).await
}

async fn run(runner: Runner, kind: RunKind, event: Value, invocation: Invocation) -> Result<Answer<RunResponse>> {
    let (event, dry_run) = dry_run_of(event)?;
    let request = RunRequest::parse(event)?;
    if dry_run {
        return runner.plan(kind, &request).await.map(Answer::Plan);
    }
    runner.run(kind, request, &invocation).await.map(Answer::Done)
}

/// RUNNER_IMAGE: see `service/run/image.rs`.
pub async fn runner_image(runner: Runner, event: Value, invocation: Invocation) -> Result<Answer<RunResponse>> {
    let (event, dry_run) = dry_run_of(event)?;
    let request = RunnerImageRequest::parse(event)?;
    if dry_run {
        return runner.plan_runner_image(&request).await.map(Answer::Plan);
    }
    runner.runner_image(request, &invocation).await.map(Answer::Done)
}

/// CANCEL(run_id): see `service/run/conclude.rs` (`Runner::cancel`).
pub async fn cancel(runner: Runner, event: Value, _: Invocation) -> Result<CancelResponse> {
    runner.cancel(CancelRequest::parse(event)?).await
}

/// INSTANCE_EVENT(EventBridge EC2 event): see `service/run/progress.rs` (`Runner::instance_event`).
pub async fn instance_event(runner: Runner, event: Value, _: Invocation) -> Result<InstanceEventResponse> {
    runner.instance_event(InstanceEvent::parse(event)?).await
}

/// STATUS: see `service/status.rs`.
pub async fn status(operations: Operations, event: Value, _: Invocation) -> Result<StatusResponse> {
    operations.status_of_cluster(crate::domain::requests::StatusRequest::parse(event)?.cluster).await
}

/// SWEEP: see `service/sweeper.rs`.
pub async fn sweep(operations: Operations, event: Value, invocation: Invocation) -> Result<SweepResponse> {
    crate::domain::requests::parse_empty(event, "sweep")?;
    operations.sweep(&invocation).await
}

/// One event per invocation naming every AWS call it made, in order; returns how many.
fn log_calls(function: &str, calls: &[String]) {
    tracing::info!(function, aws_calls = calls.len(), operations = %calls.join(" "), "AWS calls");
}

/// A dry run's answer names every AWS call it made (from the SDK's call log), so a caller sees
/// that it only read.
fn with_calls_of_a_plan<R: Serialize>(response: R, made: Vec<String>) -> Value {
    let mut value = serde_json::to_value(response).unwrap_or(Value::Null);
    if let Some(fields) = value.as_object_mut().filter(|fields| fields.get("status") == Some(&Value::from("plan"))) {
        fields.insert("aws_calls".into(), made.into());
    }
    value
}

/// Takes `"dry_run"` out of an event: `true` asks for the plan. Anything but a boolean is refused.
fn dry_run_of(mut event: Value) -> Result<(Value, bool)> {
    let dry_run = match event.as_object_mut().and_then(|fields| fields.remove("dry_run")) {
        None => false,
        Some(Value::Bool(dry_run)) => dry_run,
        Some(other) => return Err(crate::Error::invalid(format!("dry_run must be true or false, not {other}"))),
    };
    Ok((event, dry_run))
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
    let deadline = deadline_of(context.deadline, Timestamp::now());
    // On the local stack the functions read a clock it moves: the deadline moves with it.
    let moved = std::env::var(crate::settings::LOCAL_CLOCK_FILE).ok().filter(|file| !file.is_empty());
    let offset = moved.map_or(jiff::SignedDuration::ZERO, |file| crate::ports::MovedClock::new(file.into()).offset());
    Invocation { request_id: context.request_id.clone(), deadline: deadline + offset }
}

/// The invocation's deadline from Lambda's `Lambda-Runtime-Deadline-Ms` (epoch milliseconds). The
/// local Lambda emulator sends the time left instead (600000 for ten minutes): a value that is
/// no time of this century counts from `now`.
fn deadline_of(deadline_ms: u64, now: Timestamp) -> Timestamp {
    const YEAR_2001_MS: u64 = 978_307_200_000;
    let at = i64::try_from(deadline_ms).ok().and_then(|ms| Timestamp::from_millisecond(ms).ok());
    match at {
        Some(at) if deadline_ms >= YEAR_2001_MS => at,
        Some(_) => now + jiff::SignedDuration::from_millis(deadline_ms as i64),
        None => {
            // Not a reason to give up at once; a short deadline still answers in time.
            tracing::warn!(deadline_ms, "the invocation's deadline is unreadable; assuming one minute");
            now + jiff::SignedDuration::from_mins(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_deadline_is_lambdas_epoch_milliseconds_or_the_local_emulators_time_left() {
        let now: Timestamp = "2026-12-05T18:00:00Z".parse().unwrap();
        let lambda = now + jiff::SignedDuration::from_mins(15);
        assert_eq!(deadline_of(lambda.as_millisecond() as u64, now), lambda);
        assert_eq!(deadline_of(600_000, now), now + jiff::SignedDuration::from_mins(10));
        assert_eq!(deadline_of(u64::MAX, now), now + jiff::SignedDuration::from_mins(1));
    }
    use crate::testing::World;

    #[derive(Clone, Copy)]
    enum Function {
        Deploy,
        ScheduleDestroy,
        Destroy,
    }

    /// What `serve` answers for `event` sent to `function`, as JSON.
    async fn handle(
        world: &World,
        function: Function,
        event: Value,
        invocation: Invocation,
    ) -> Result<Value, Diagnostic> {
        let provisioner = world.provisioner.clone();
        let inv = &invocation;
        fn json<R: Serialize>(answer: Result<R, (Diagnostic, crate::Error)>) -> Result<Value, Diagnostic> {
            answer.map(|response| serde_json::to_value(response).unwrap()).map_err(|(diagnostic, _)| diagnostic)
        }
        match function {
            Function::Deploy => json(answer("deploy", inv, deploy(provisioner, event, inv.clone())).await),
            Function::ScheduleDestroy => {
                json(answer("schedule_destroy", inv, schedule_destroy(provisioner, event, inv.clone())).await)
            }
            Function::Destroy => json(answer("destroy", inv, destroy(provisioner, event, inv.clone())).await),
        }
    }

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
            (
                Function::ScheduleDestroy,
                json!({"cluster": "ci-1", "time_to_destroy": "2020-01-01T00:00:00Z"}),
                "InvalidRequest",
            ),
        ];
        for (function, event, code) in cases {
            let diagnostic = handle(&world, function, event.clone(), world.invocation("r")).await.unwrap_err();
            assert_eq!(diagnostic.error_type, code, "{event}");
            let message = &diagnostic.error_message;
            assert!(!message.is_empty() && !message.contains('\n') && message.len() < 400, "{message}");
        }
        // Nothing was created: bad events make no call at all, missing images only look.
        assert!(world.stacks.created().is_empty() && world.schedules.all().is_empty());
        assert_eq!(
            world.stacks.calls().len(),
            2,
            "one describe before and one under the lock: {:?}",
            world.stacks.calls()
        );
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
                let diagnostic = handle(&world, function, event, world.invocation("r")).await.unwrap_err();
                assert_eq!(diagnostic.error_type, "InvalidRequest", "{payload:.60}");
                assert!(diagnostic.error_message.contains(reason), "{}", diagnostic.error_message);
            }
            // TEST and BUILD parse their events the same way.
            let refused = crate::domain::RunRequest::parse(as_the_runtime_parses(&payload)).unwrap_err();
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
            handle(&world, Function::Deploy, json!({"cluster": "developers"}), world.invocation("r1")).await.unwrap();
        assert_eq!((deployed["status"].as_str(), deployed["cluster"].as_str()), (Some("success"), Some("developers")));
        assert_eq!(deployed["version"], "latest");
        let scheduled = handle(
            &world,
            Function::ScheduleDestroy,
            json!({"cluster": "developers", "time_to_destroy": "2026-11-23T16:00:00+02:00"}),
            world.invocation("r2"),
        )
        .await
        .unwrap();
        assert_eq!(scheduled["time_to_destroy"], "2026-11-23T14:00:00Z");
        let destroyed =
            handle(&world, Function::Destroy, json!({"cluster": "developers"}), world.invocation("r3")).await.unwrap();
        assert_eq!(
            (destroyed["status"].as_str(), destroyed["cluster"].as_str()),
            (Some("success"), Some("developers"))
        );
    }

    /// The function list is the directories under functions/: the Makefile, the local stack and
    /// the bench read it there; the template must deploy exactly those, named alike.
    #[test]
    fn the_template_deploys_every_function_directory_and_no_other() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let template = std::fs::read_to_string(root.join("template.yaml")).unwrap();
        let mut functions: Vec<String> = std::fs::read_dir(root.join("functions"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        functions.sort();
        let mut deployed: Vec<&str> =
            template.lines().filter_map(|line| line.trim().strip_prefix("CodeUri: functions/")).collect();
        deployed.sort();
        assert_eq!(deployed, functions);
        for function in &functions {
            assert!(template.contains(&format!("Binary: provisioner-{}\n", function.replace('_', "-"))), "{function}");
            assert!(
                template.contains(&format!("FunctionName: !Sub \"${{AWS::StackName}}-{function}\"\n")),
                "{function}"
            );
        }
    }
}
