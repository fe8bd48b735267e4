//! A day in the life, on the local stack: hours of provisioner time pass (`make local-advance`) in
//! ten-minute steps while clusters stand beside runs, spot warnings, a cancel, a hung run that
//! reaches its limit, a warning before a destroy and the destroy its schedule fires, with a sweep
//! every step. After every step the invariants are checked and printed.
//!
//! It moves the local stack's clock, so `make test` runs it alone, after every other test.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_ec2::types::Filter;
use jiff::{SignedDuration, Timestamp};
use provisioner_e2e::{emulator, local_function_env, make, make_invoke, unique};
use serde_json::{json, Value};

/// The local stack's time: the real time moved forward by `make local-advance`.
fn local_now() -> Timestamp {
    let file = local_function_env().get("PROVISIONER_LOCAL_CLOCK_FILE").cloned().expect("the local clock's file");
    let offset: i64 = std::fs::read_to_string(file).ok().and_then(|text| text.trim().parse().ok()).unwrap_or(0);
    Timestamp::now() + SignedDuration::from_secs(offset)
}

fn advance(minutes: u32) {
    let output = std::process::Command::new("make")
        .args(["-s", "--no-print-directory", "local-advance", &format!("MINUTES={minutes}")])
        .current_dir(provisioner_e2e::repo_root())
        .output()
        .expect("make runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// A live instance (not yet terminating) and its tags.
#[derive(Debug)]
struct Live {
    id: String,
    tags: BTreeMap<String, String>,
}

/// Every instance of the emulator that has not begun to terminate.
async fn live_instances() -> Vec<Live> {
    let ec2 = aws_sdk_ec2::Client::new(&emulator().await);
    let states = Filter::builder().name("instance-state-name").values("pending").values("running").build();
    let described = ec2.describe_instances().filters(states).send().await.unwrap();
    described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| Live {
            id: i.instance_id().unwrap().to_owned(),
            tags: i.tags().iter().map(|t| (t.key().unwrap().to_owned(), t.value().unwrap().to_owned())).collect(),
        })
        .collect()
}

/// The kind of a run, from its id.
fn kind_of(run_id: &str) -> &'static str {
    match run_id.split('-').next() {
        Some("build") => "build",
        Some("image") => "runner_image",
        _ => "test",
    }
}

/// The current attempt of a run, as its answer lists them.
fn attempt_of(run_id: &str) -> usize {
    peek(kind_of(run_id), run_id)["attempts"].as_array().map_or(1, Vec::len)
}

/// The report item of the run's current instance: `report#ROLE-ID:INSTANCE-ID`, as its role's
/// session names it (the only item that role may write).
fn report_key(run_id: &str) -> AttributeValue {
    let kind = kind_of(run_id);
    let role = if kind == "build" { "PROVISIONER_BUILD_RUNNER_ROLE_ID" } else { "PROVISIONER_TEST_RUNNER_ROLE_ID" };
    let role_id = local_function_env()[role].clone();
    let instance = peek(kind, run_id)["instance_id"].as_str().expect("the run's instance").to_owned();
    AttributeValue::S(format!("report#{role_id}:{instance}"))
}

/// What the instance writes when it checks in and starts its first step (it hangs there).
async fn check_in(run_id: &str) {
    let table = local_function_env()["PROVISIONER_TABLE"].clone();
    let client = aws_sdk_dynamodb::Client::new(&emulator().await);
    let now = local_now().to_string();
    let step = AttributeValue::M(
        [
            ("status".to_owned(), AttributeValue::S("running".into())),
            ("started_at".to_owned(), AttributeValue::S(now.clone())),
        ]
        .into(),
    );
    client
        .update_item()
        .table_name(table)
        .key("pk", report_key(run_id))
        .update_expression("SET #state = :state, #reported = :now, #steps = :steps, #run = :run, #attempt = :attempt")
        .expression_attribute_names("#state", "instance_state")
        .expression_attribute_names("#reported", "reported_at")
        .expression_attribute_names("#steps", "steps")
        .expression_attribute_names("#run", "run_id")
        .expression_attribute_names("#attempt", "attempt")
        .expression_attribute_values(":state", AttributeValue::S("running".into()))
        .expression_attribute_values(":now", AttributeValue::S(now))
        .expression_attribute_values(":steps", AttributeValue::M([("checkout".to_owned(), step)].into()))
        .expression_attribute_values(":run", AttributeValue::S(run_id.to_owned()))
        .expression_attribute_values(":attempt", AttributeValue::N(attempt_of(run_id).to_string()))
        .send()
        .await
        .unwrap();
}

/// What the instance writes when its last step ended: every step passed (or the last failed),
/// what a runner image holds, and the outcome.
async fn finish(run_id: &str, steps: &[Value], failed: bool, holds: Option<(&str, &str)>) {
    let table = local_function_env()["PROVISIONER_TABLE"].clone();
    let client = aws_sdk_dynamodb::Client::new(&emulator().await);
    let now = local_now().to_string();
    let s = |text: &str| AttributeValue::S(text.to_owned());
    let mut reported = std::collections::HashMap::new();
    for (index, step) in steps.iter().enumerate() {
        let status = if failed && index == steps.len() - 1 { "failed" } else { "passed" };
        let fields = [
            ("status".to_owned(), s(status)),
            ("exit_code".to_owned(), AttributeValue::N(if status == "failed" { "2" } else { "0" }.into())),
            ("started_at".to_owned(), s(&now)),
            ("ended_at".to_owned(), s(&now)),
        ];
        reported.insert(step["name"].as_str().unwrap().to_owned(), AttributeValue::M(fields.into()));
    }
    let mut update = client
        .update_item()
        .table_name(table)
        .key("pk", report_key(run_id))
        .expression_attribute_names("#run", "run_id")
        .expression_attribute_names("#attempt", "attempt")
        .expression_attribute_values(":run", s(run_id))
        .expression_attribute_values(":attempt", AttributeValue::N(attempt_of(run_id).to_string()))
        .expression_attribute_names("#state", "instance_state")
        .expression_attribute_names("#reported", "reported_at")
        .expression_attribute_names("#steps", "steps")
        .expression_attribute_names("#outcome", "outcome")
        .expression_attribute_values(":state", s("finished"))
        .expression_attribute_values(":now", s(&now))
        .expression_attribute_values(":steps", AttributeValue::M(reported))
        .expression_attribute_values(":outcome", s(if failed { "failed" } else { "succeeded" }));
    let mut sets =
        "SET #state = :state, #reported = :now, #steps = :steps, #outcome = :outcome, #run = :run, #attempt = :attempt"
            .to_owned();
    if let Some((digest, tools)) = holds {
        let holds = [("build_image_digest".to_owned(), s(digest)), ("tools".to_owned(), s(tools))];
        update = update
            .expression_attribute_names("#holds", "holds")
            .expression_attribute_values(":holds", AttributeValue::M(holds.into()));
        sets.push_str(", #holds = :holds");
    }
    update.update_expression(sets).send().await.unwrap();
}

fn spot_warning(instance_id: &str) -> Value {
    let event = json!({
        "version": "0", "id": unique("event-"), "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2", "account": "123456789012", "time": local_now().to_string(), "region": "us-east-1",
        "resources": [], "detail": {"instance-id": instance_id, "instance-action": "terminate"}
    });
    make_invoke("instance_event", &event.to_string()).assert_success().clone()
}

/// A run's answer now (success, running, or its error), without waiting.
fn peek(kind: &str, run_id: &str) -> Value {
    make_invoke(kind, &json!({"run_id": run_id, "wait_seconds": 0}).to_string()).answer
}

fn start(kind: &str, cluster: &str) -> Value {
    start_held(kind, cluster, 0)
}

fn start_held(kind: &str, cluster: &str, hold_minutes: u32) -> Value {
    let payload = json!({"cluster": cluster, "version": "main", "wait_seconds": 0, "requested_by": "day-in-the-life",
        "hold_minutes": hold_minutes});
    let started = make_invoke(kind, &payload.to_string());
    assert_eq!((started.exit, &started.answer["status"]), (0, &json!("running")), "{:#}", started.answer);
    started.answer
}

/// Ten TEST starts at the same moment against the `ci` profile's cap of six: at most six run, the
/// rest answer `Busy`; never more than six live instances. The runs are cancelled after.
async fn ten_simultaneous_starts_stay_within_the_cap() {
    const CAP: usize = 6;
    let clusters: Vec<String> = (0..10).map(|_| unique("ci-cap-")).collect();
    let answers: Vec<provisioner_e2e::Invoked> = std::thread::scope(|scope| {
        let asks: Vec<_> = clusters
            .iter()
            .map(|cluster| {
                let payload = json!({"cluster": cluster, "version": "main", "wait_seconds": 0});
                scope.spawn(move || make_invoke("test", &payload.to_string()))
            })
            .collect();
        asks.into_iter().map(|ask| ask.join().unwrap()).collect()
    });
    let started: Vec<String> = answers
        .iter()
        .filter(|a| a.answer["status"] == "running")
        .map(|a| a.answer["run_id"].as_str().unwrap().to_owned())
        .collect();
    let busy = answers.iter().filter(|a| a.answer["errorType"] == "Busy").count();
    assert_eq!(started.len() + busy, 10, "each started or answered Busy: {answers:#?}");
    assert!(started.len() <= CAP, "{} runs under a cap of {CAP}", started.len());
    let live = live_instances().await;
    let theirs = live.iter().filter(|i| i.tags.get("sliderule:run-id").is_some_and(|id| started.contains(id))).count();
    assert!(theirs <= CAP, "{theirs} live instances under a cap of {CAP}");
    let status = make_invoke("status", "{}").assert_success().clone();
    let active = status["runs"].as_array().unwrap().iter().filter(|run| run["kind"] == "test").count();
    assert!(active <= CAP, "{active} active test runs under a cap of {CAP}: {status:#}");
    println!(
        "ten simultaneous starts: {} started, {busy} answered Busy, {theirs} live instances, {active} active test runs",
        started.len()
    );
    for run_id in &started {
        make(&["cluster-cancel", "LOCAL=1", &format!("RUN_ID={run_id}")]).assert_success();
    }
}

struct Day {
    standing: String,
    scheduled: String,
    stack_instances: Vec<String>,
    /// (kind, run id) of every run started, and the outcome each must end with.
    runs: Vec<(&'static str, String, &'static str)>,
    warned: bool,
    destroyed_scheduled: bool,
}

impl Day {
    /// The invariants after a step, printed as one line.
    async fn check(&self, minute: u32, swept: &Value) {
        let live = live_instances().await;
        let stack = format!("sliderule-cluster-{}", self.standing);
        // No instance of the standing cluster's stack ended, and the sweep ended none of them.
        let standing: Vec<&str> = live
            .iter()
            .filter(|i| i.tags.get("aws:cloudformation:stack-name") == Some(&stack))
            .map(|i| i.id.as_str())
            .collect();
        for id in &self.stack_instances {
            assert!(standing.contains(&id.as_str()), "minute {minute}: {id} of the standing cluster ended");
        }
        let actions = swept["actions"].as_array().cloned().unwrap_or_default();
        for action in &actions {
            assert!(
                !self.stack_instances.iter().any(|id| action["target"] == id.as_str()),
                "minute {minute}: the sweep acted on the cluster's instance: {action:#}"
            );
        }
        // Never two live instances of a run; none alive past its expiry.
        let now = local_now();
        let mut per_run: BTreeMap<&str, usize> = BTreeMap::new();
        for instance in &live {
            if let Some(run) = instance.tags.get("sliderule:run-id") {
                if self.runs.iter().any(|(_, id, _)| id == run) {
                    *per_run.entry(run).or_default() += 1;
                    let expires: Timestamp = instance.tags["sliderule:expires-at"].parse().unwrap();
                    // A sweep every ten minutes ends what expired since the last.
                    assert!(
                        expires + SignedDuration::from_mins(10) > now,
                        "minute {minute}: {} outlived {expires}",
                        instance.id
                    );
                }
            }
        }
        assert!(per_run.values().all(|count| *count <= 1), "minute {minute}: two live instances of a run: {per_run:?}");
        // Every run that ended has exactly one contract outcome, the one it must have.
        let mut ended = Vec::new();
        for (kind, run_id, expected) in &self.runs {
            let answer = peek(kind, run_id);
            let outcome = answer["errorType"].as_str().or(answer["status"].as_str()).unwrap_or("?").to_owned();
            if outcome != "running" {
                assert_eq!(outcome, *expected, "minute {minute}: {run_id}: {answer:#}");
                ended.push(format!("{kind} {outcome}"));
            }
        }
        let acted: Vec<String> = actions.iter().map(|a| format!("{} {}", a["action"], a["target"])).collect();
        println!(
            "minute {minute:>3}: cluster {} stands on {} instance(s); runs live {}; ended [{}]; sweep [{}]",
            self.standing,
            standing.len(),
            per_run.len(),
            ended.join(", "),
            acted.join(", ")
        );
    }
}

#[tokio::test]
async fn a_day_in_the_life_keeps_every_invariant_over_eight_hours() {
    let standing = unique("ci-day-");
    let scheduled = unique("ci-day-");
    make(&["cluster-deploy", "LOCAL=1", &format!("CLUSTER={standing}")]).assert_success();
    // The standing cluster is kept past the day; the other goes at its default lifetime.
    make(&["cluster-schedule-destroy", "LOCAL=1", &format!("CLUSTER={standing}"), "TTL=700"]).assert_success();
    make(&["cluster-deploy", "LOCAL=1", &format!("CLUSTER={scheduled}")]).assert_success();
    let stack = format!("sliderule-cluster-{standing}");
    let stack_instances: Vec<String> = live_instances()
        .await
        .into_iter()
        .filter(|i| i.tags.get("aws:cloudformation:stack-name") == Some(&stack))
        .map(|i| i.id)
        .collect();
    assert!(!stack_instances.is_empty(), "the emulator's CloudFormation launched the cluster's instances");
    ten_simultaneous_starts_stay_within_the_cap().await;

    // A TEST run that hangs in its first step, a BUILD run a spot warning interrupts and a cancel ends.
    let hung = start("test", &standing);
    let hung_id = hung["run_id"].as_str().unwrap().to_owned();
    check_in(&hung_id).await;
    let build = start("build", &standing);
    let build_id = build["run_id"].as_str().unwrap().to_owned();
    check_in(&build_id).await;
    // Runs of other clusters of the profile: a failed one held for debugging, one from the
    // refreshed runner image.
    let held_cluster = unique("ci-day-");
    let from_image_cluster = unique("ci-day-");
    let mut held_id = String::new();
    let mut images: Vec<(String, String)> = Vec::new();
    let mut retired = 0;
    let mut day = Day {
        standing: standing.clone(),
        scheduled: scheduled.clone(),
        stack_instances,
        runs: vec![("test", hung_id.clone(), "RunTimedOut"), ("build", build_id.clone(), "RunCancelled")],
        warned: false,
        destroyed_scheduled: false,
    };

    for minute in (10..=480).step_by(10) {
        advance(10);
        match minute {
            20 => {
                let instance = peek("build", &build_id)["instance_id"].as_str().unwrap().to_owned();
                assert_eq!(spot_warning(&instance)["action"], "retried");
                let next = peek("build", &build_id);
                assert_eq!(next["attempts"].as_array().unwrap().len(), 2, "{next:#}");
                check_in(&build_id).await;
            }
            40 => {
                let cancelled = make(&["cluster-cancel", "LOCAL=1", &format!("RUN_ID={build_id}")]);
                assert_eq!(cancelled.assert_success()["outcome"], "cancelled");
            }
            60 => {
                let held = start_held("test", &held_cluster, 30);
                held_id = held["run_id"].as_str().unwrap().to_owned();
                check_in(&held_id).await;
                finish(&held_id, held["steps"].as_array().unwrap(), true, None).await;
                let failed = peek("test", &held_id);
                assert_eq!(failed["errorType"], "TestsFailed", "{failed:#}");
                day.runs.push(("test", held_id.clone(), "TestsFailed"));
            }
            // Runner image refreshes, each after the build environment moved (a new digest): the
            // third leaves the first beyond the newest two, for the sweeper to retire.
            120 | 200 | 300 => {
                let image_run = make_invoke("runner_image", r#"{"wait_seconds": 0, "requested_by": "nightly"}"#);
                assert_eq!(image_run.answer["status"], "running", "{:#}", image_run.answer);
                let run_id = image_run.answer["run_id"].as_str().unwrap().to_owned();
                check_in(&run_id).await;
                let digest = format!("sha256:{}", ["a1", "b2", "c3"][images.len()].repeat(32));
                let steps = image_run.answer["steps"].as_array().unwrap().clone();
                finish(&run_id, &steps, false, Some((&digest, "git=2.47.1 docker=25.0.5"))).await;
                images.push((run_id.clone(), digest));
                day.runs.push(("runner_image", run_id, "success"));
            }
            210 => {
                let status = make_invoke("status", "{}").assert_success().clone();
                let newest = &status["runner_images"][0];
                let (image_run, digest) = images.last().unwrap();
                assert_eq!((&newest["run_id"], &newest["build_image_digest"]), (&json!(image_run), &json!(digest)));
                assert_eq!(status["last_image_refresh"]["state"], "succeeded", "{status:#}");
                let test = start("test", &from_image_cluster);
                assert_eq!(test["runner_image"], newest["image_id"], "a TEST run boots the refreshed image");
                let run_id = test["run_id"].as_str().unwrap().to_owned();
                make(&["cluster-cancel", "LOCAL=1", &format!("RUN_ID={run_id}")]).assert_success();
                day.runs.push(("test", run_id, "RunCancelled"));
            }
            240 => {
                // The schedule fires (the emulator fires none): destroy with the schedule's own input.
                assert!(day.warned, "the scheduled cluster was warned before its destroy");
                make_invoke("destroy", &json!({"cluster": scheduled}).to_string()).assert_success();
                day.destroyed_scheduled = true;
            }
            _ => {}
        }
        let swept = make_invoke("sweep", "{}").assert_success().clone();
        for recount in swept["recounts"].as_array().into_iter().flatten() {
            assert_eq!(
                recount["corrected"], false,
                "minute {minute}: the books differed from the records: {recount:#}"
            );
        }
        let actions = swept["actions"].as_array().cloned().unwrap_or_default();
        retired += actions.iter().filter(|a| a["action"] == "retire_image").count();
        if actions.iter().any(|a| a["action"] == "warn_destroy" && a["target"] == day.scheduled.as_str()) {
            assert!((210..240).contains(&minute), "warned at minute {minute}");
            day.warned = true;
        }
        day.check(minute, &swept).await;
        // The failed run's instance is kept for its hold (30 minutes from minute 60), then ended.
        if (70..=80).contains(&minute) || minute >= 100 {
            let held = live_instances().await.into_iter().any(|i| i.tags.get("sliderule:run-id") == Some(&held_id));
            assert_eq!(held, minute <= 80, "minute {minute}: the held instance is live only while held");
        }
    }

    // The hung run ended at its limit, once, naming it; nothing of it is left.
    let timed_out = peek("test", &hung_id);
    assert_eq!(timed_out["errorType"], "RunTimedOut", "{timed_out:#}");
    let message = timed_out["errorMessage"].as_str().unwrap();
    assert!(message.contains("time limit of 180 minutes") && message.contains("in step checkout"), "{message}");
    let cancel = make(&["cluster-cancel", "LOCAL=1", &format!("RUN_ID={hung_id}")]);
    let attempts = cancel.assert_success()["attempts"].as_array().unwrap().clone();
    assert_eq!(attempts.len(), 1, "never retried: {attempts:#?}");
    assert_eq!(attempts[0]["outcome"], "timed_out");
    assert!(day.destroyed_scheduled);
    assert_eq!(retired, 1, "the first of the day's three runner images was retired, once");
    let status = make_invoke("status", "{}").assert_success().clone();
    let clusters: Vec<&str> =
        status["clusters"].as_array().unwrap().iter().filter_map(|c| c["cluster"].as_str()).collect();
    assert!(clusters.contains(&standing.as_str()) && !clusters.contains(&scheduled.as_str()), "{clusters:?}");
    // History says what happened to each cluster, the sweeper's warning and the fired destroy too.
    let operations = |cluster: &str| -> Vec<String> {
        let answer = make_invoke("status", &json!({"cluster": cluster}).to_string()).assert_success().clone();
        let history = answer["history"].as_array().cloned().unwrap_or_default();
        history.iter().rev().map(|entry| format!("{} {}", entry["operation"], entry["outcome"])).collect()
    };
    let standing_history = operations(&standing);
    let kinds = |history: &[String]| -> Vec<String> {
        history.iter().map(|entry| entry.split(' ').next().unwrap().trim_matches('"').to_owned()).collect()
    };
    assert_eq!(kinds(&standing_history), ["deploy", "schedule_destroy"], "{standing_history:?}");
    let scheduled_history = operations(&scheduled);
    assert_eq!(kinds(&scheduled_history), ["deploy", "destroy_warning", "destroy"], "{scheduled_history:?}");
    // The month's spend counts the standing cluster's hours and the day's runs.
    let profile = status["budgets"].as_array().unwrap().iter().find(|b| b["profile"] == "ci").unwrap().clone();
    let standing_status = status["clusters"].as_array().unwrap().iter().find(|c| c["cluster"] == standing.as_str());
    let standing_cost = standing_status.unwrap()["cost_so_far_usd"].as_f64().unwrap();
    let per_hour = standing_status.unwrap()["cost_per_hour_usd"].as_f64().unwrap();
    let (spent, clusters, runs) = (
        profile["spent_usd"].as_f64().unwrap(),
        profile["clusters_usd"].as_f64().unwrap(),
        profile["runs_usd"].as_f64().unwrap(),
    );
    assert!(standing_cost >= 8.0 * per_hour * 0.99, "eight hours of the standing cluster: {standing_cost}");
    assert!(clusters >= standing_cost && runs > 0.0, "{profile:#}");
    assert!((spent - clusters - runs).abs() < 0.02, "{profile:#}");
    println!(
        "history: {standing}: {standing_history:?}; {scheduled}: {scheduled_history:?}; spend of ci this month: \
         {spent:.2} USD ({clusters:.2} clusters, {runs:.2} runs), the standing cluster {standing_cost:.2}"
    );
    day.runs.clear();
    make(&["cluster-destroy", "LOCAL=1", &format!("CLUSTER={standing}")]).assert_success();

    // A day later the sweeper recounts the month from the records (stacks, history, run records):
    // the books kept as the day happened, every feature at once, agree with it to the cent.
    advance(24 * 60);
    let swept = make_invoke("sweep", "{}").assert_success().clone();
    let recounts = swept["recounts"].as_array().cloned().unwrap_or_default();
    let ci = recounts.iter().find(|r| r["profile"] == "ci").unwrap_or_else(|| panic!("ci recounted: {swept:#}"));
    assert_eq!((&ci["ok"], &ci["corrected"]), (&json!(true), &json!(false)), "the books of ci: {ci:#}");
    println!("a day later, the recount of ci: {}", ci["result"]);
}
