//! TEST and BUILD end to end on the local stack: `make invoke` launches an instance in the AWS
//! emulator, `tools/simulate-instance` plays it by running its user-data in a sandbox, and the
//! function then answers from what the instance reported.

use std::process::Command;

use aws_sdk_ec2::types::InstanceAttributeName;
use provisioner_e2e::{emulator, make, make_invoke, repo_root, unique};
use serde_json::{json, Value};

fn start(kind: &str, cluster: &str, version: &str) -> Value {
    let started = make_invoke(kind, &json!({"cluster": cluster, "version": version, "wait_seconds": 0}).to_string());
    assert_eq!(started.exit, 0, "{:#} {}", started.answer, started.stderr);
    assert_eq!(started.answer["status"], "running", "{:#}", started.answer);
    started.answer
}

/// Plays the instance with `tools/simulate-instance`, failing the stubs whose call has `fail`.
fn simulate(instance_id: &str, fail: Option<&str>) {
    simulate_with(instance_id, fail.map(|pattern| ["--fail", pattern]).iter().flatten().copied());
}

/// Plays the instance with STEP:TEST_ID failing in its suite's own report (`--fail-test`).
fn simulate_failing_tests(instance_id: &str, tests: &[&str]) {
    simulate_with(instance_id, tests.iter().flat_map(|test| ["--fail-test", test]));
}

fn simulate_with<'a>(instance_id: &str, options: impl Iterator<Item = &'a str>) {
    let output =
        Command::new(repo_root().join("tools/simulate-instance")).arg(instance_id).args(options).output().unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn resume(kind: &str, run_id: &str) -> provisioner_e2e::Invoked {
    make_invoke(kind, &json!({"run_id": run_id, "wait_seconds": 30}).to_string())
}

async fn described_instance(instance_id: &str) -> aws_sdk_ec2::types::Instance {
    let ec2 = aws_sdk_ec2::Client::new(&emulator().await);
    let described = ec2.describe_instances().instance_ids(instance_id).send().await.unwrap();
    described.reservations()[0].instances()[0].clone()
}

async fn instance_state(instance_id: &str) -> String {
    described_instance(instance_id).await.state().unwrap().name().unwrap().as_str().to_owned()
}

#[tokio::test]
async fn a_test_run_launches_a_locked_down_spot_instance_and_succeeds_when_its_steps_pass() {
    // The longest name a cluster may have: the launch's client token and user-data at their
    // largest, which the request guard holds to EC2's limits.
    let cluster = format!("{:x<40}", unique("ci-run-"));
    let started = start("test", &cluster, "v4.5.1");
    let run_id = started["run_id"].as_str().unwrap().to_owned();
    let instance_id = started["instance_id"].as_str().unwrap().to_owned();

    // The same run again while it is active: the same run, no second instance.
    let again = start("test", &cluster, "v4.5.1");
    assert_eq!(again["run_id"], run_id.as_str());
    assert_eq!(again["instance_id"], instance_id.as_str());

    let instance = &described_instance(&instance_id).await;
    let ec2 = aws_sdk_ec2::Client::new(&emulator().await);
    assert_eq!(instance.instance_lifecycle().map(|l| l.as_str()), Some("spot"));
    assert_eq!(instance.metadata_options().and_then(|m| m.http_tokens()).map(|t| t.as_str()), Some("required"));
    assert!(instance
        .iam_instance_profile()
        .and_then(|p| p.arn())
        .is_some_and(|a| a.ends_with("/sliderule-provisioner-runner")));
    let tags: std::collections::BTreeMap<&str, &str> =
        instance.tags().iter().map(|t| (t.key().unwrap(), t.value().unwrap())).collect();
    assert_eq!(tags["sliderule:run-id"], run_id);
    assert_eq!(tags["sliderule:kind"], "test");
    assert_eq!(tags["sliderule:cluster"], cluster);
    assert!(tags["sliderule:expires-at"].ends_with('Z'));
    let shutdown = ec2
        .describe_instance_attribute()
        .instance_id(&instance_id)
        .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
        .send()
        .await
        .unwrap();
    assert_eq!(shutdown.instance_initiated_shutdown_behavior().and_then(|v| v.value()), Some("terminate"));
    let user_data = ec2
        .describe_instance_attribute()
        .instance_id(&instance_id)
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let raw = aws_smithy_types::base64::decode(user_data.user_data().and_then(|v| v.value()).unwrap()).unwrap();
    assert_eq!(raw[..2], [0x1f, 0x8b], "gzip, which cloud-init unpacks");
    assert!(raw.len() <= provisioner_core::domain::EC2_USER_DATA_LIMIT, "{} bytes", raw.len());
    let volumes = ec2
        .describe_volumes()
        .filters(aws_sdk_ec2::types::Filter::builder().name("attachment.instance-id").values(&instance_id).build())
        .send()
        .await
        .unwrap();
    assert!(!volumes.volumes().is_empty() && volumes.volumes().iter().all(|v| v.encrypted() == Some(true)));

    simulate(&instance_id, None);
    let done = resume("test", &run_id);
    let answer = done.assert_success();
    assert_eq!(answer["state"], "succeeded");
    assert_eq!(answer["commit"], "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(answer["layout"], "D", "the layout the instance found in the checkout");
    let steps = answer["steps"].as_array().unwrap();
    let manager = steps.iter().find(|s| s["name"] == "manager-pytests").unwrap();
    assert_eq!(manager["status"], "not_applicable", "layout D has no manager: {answer:#}");
    assert!(manager["reason"].as_str().is_some_and(|r| r.contains("manager")), "{manager:#}");
    assert!(steps.iter().filter(|s| s["name"] != "manager-pytests").all(|s| s["status"] == "passed"), "{answer:#}");
    assert_eq!(instance_state(&instance_id).await, "terminated", "the function terminates the instance");
}

#[tokio::test]
async fn a_test_run_with_a_failing_step_answers_tests_failed() {
    let cluster = unique("ci-run-");
    let started = start("test", &cluster, "main");
    simulate(started["instance_id"].as_str().unwrap(), Some("make selftest"));
    let failed = resume("test", started["run_id"].as_str().unwrap());
    failed.assert_error("TestsFailed");
    let message = failed.answer["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("lua-selftests")
            && message.contains("s3://sliderule-provisioner-runs-123456789012-us-east-1/runs/"),
        "{message}"
    );
}

#[tokio::test]
async fn a_build_run_succeeds_and_reports_the_images_it_pushed() {
    let cluster = unique("ci-run-");
    let started = start("build", &cluster, "v4.5.1");
    let instance = described_instance(started["instance_id"].as_str().unwrap()).await;
    let profile = instance.iam_instance_profile().and_then(|p| p.arn()).unwrap_or_default();
    assert!(
        profile.ends_with("/sliderule-provisioner-build-runner"),
        "BUILD launches with the profile that may push: {profile}"
    );
    simulate(started["instance_id"].as_str().unwrap(), None);
    let done = resume("build", started["run_id"].as_str().unwrap());
    let answer = done.assert_success();
    let mut images: Vec<&str> = answer["images"].as_array().unwrap().iter().map(|i| i.as_str().unwrap()).collect();
    images.sort();
    let registry = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    let mut expected: Vec<String> = ["sliderule", "ilb", "monitor", "monitor-agent", "ams"]
        .iter()
        .map(|i| format!("{registry}/{i}:v4.5.1"))
        .collect();
    expected.sort();
    assert_eq!(images, expected, "the images layout D pushes, under the version's tag");

    // What BUILD pushed is what deploy checks: the version deploys now.
    let deployed =
        provisioner_e2e::make(&["cluster-deploy", "LOCAL=1", &format!("CLUSTER={cluster}"), "VERSION=v4.5.1"]);
    assert_eq!(deployed.assert_success()["version"], "v4.5.1");
    provisioner_e2e::make(&["cluster-destroy", "LOCAL=1", &format!("CLUSTER={cluster}")]).assert_success();
}

/// An EC2 event as the template's EventBridge rules deliver it to `instance_event`.
fn ec2_event(detail_type: &str, detail: Value) -> provisioner_e2e::Invoked {
    let event = json!({
        "version": "0", "id": unique("event-"), "detail-type": detail_type, "source": "aws.ec2",
        "account": "123456789012", "time": "2026-12-02T12:00:00Z", "region": "us-east-1",
        "resources": [], "detail": detail
    });
    make_invoke("instance_event", &event.to_string())
}

fn interruption_warning(instance_id: &str) -> provisioner_e2e::Invoked {
    ec2_event(
        "EC2 Spot Instance Interruption Warning",
        json!({"instance-id": instance_id, "instance-action": "terminate"}),
    )
}

/// Where a run stands now, without waiting: its "running" answer.
fn peek(kind: &str, run_id: &str) -> Value {
    let answer = make_invoke(kind, &json!({"run_id": run_id, "wait_seconds": 0}).to_string());
    assert_eq!(answer.exit, 0, "{:#} {}", answer.answer, answer.stderr);
    assert_eq!(answer.answer["status"], "running", "{:#}", answer.answer);
    answer.answer
}

fn attempts(answer: &Value) -> Vec<(String, String, String)> {
    answer["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let text = |key: &str| a[key].as_str().unwrap_or_default().to_owned();
            (text("instance_id"), text("market"), text("outcome"))
        })
        .collect()
}

/// What a nightly reads: three TEST runs of one version on one cluster, failing test X, then X
/// again, then none, answer X `new`, then `still_failing` since the first run, then `fixed`, in
/// `status`'s recent runs of the cluster; the failed runs' answers lead with what is new.
#[tokio::test]
async fn three_runs_of_a_version_say_new_then_still_failing_since_the_first_then_fixed() {
    // A version of its own: the comparison is per profile and version, and other tests run main.
    let (cluster, version) = (unique("ci-nightly-"), unique("nightly-"));
    const STEP: &str = "python-client-pytests";
    const TEST: &str = "tests/test_atl06.py::TestAlgorithm::test_gs";
    let failing = format!("{STEP}:{TEST}");
    let mut runs = Vec::new();
    for fails in [vec![failing.as_str()], vec![failing.as_str()], vec![]] {
        let started = start("test", &cluster, &version);
        simulate_failing_tests(started["instance_id"].as_str().unwrap(), &fails);
        let run_id = started["run_id"].as_str().unwrap().to_owned();
        let answer = resume("test", &run_id);
        runs.push((run_id, answer));
    }
    runs[0].1.assert_error("TestsFailed");
    let message = runs[0].1.answer["errorMessage"].as_str().unwrap();
    assert!(message.contains(&format!("1 new failure(s): {TEST}")), "{message}");
    runs[1].1.assert_error("TestsFailed");
    let message = runs[1].1.answer["errorMessage"].as_str().unwrap();
    assert!(message.contains(&format!("1 still failing (the oldest since {})", runs[0].0)), "{message}");
    assert_eq!(runs[2].1.exit, 0, "{:#}", runs[2].1.answer);
    assert_eq!(runs[2].1.answer["tests"]["fixed"], json!([TEST]), "{:#}", runs[2].1.answer);

    let status = make_invoke("status", &json!({"cluster": cluster}).to_string());
    let recent = status.answer["recent_runs"].as_array().unwrap();
    let tests_of = |run_id: &str| {
        let run = recent.iter().find(|run| run["run_id"] == run_id).unwrap_or_else(|| panic!("{run_id}: {recent:#?}"));
        run["tests"].clone()
    };
    let (first, second, third) = (tests_of(&runs[0].0), tests_of(&runs[1].0), tests_of(&runs[2].0));
    assert_eq!(first["compared_with"], Value::Null, "{first:#}");
    assert_eq!(first["new"], json!([TEST]), "{first:#}");
    assert_eq!(first["failed"], json!([{"id": TEST, "step": STEP, "status": "new", "since": runs[0].0}]), "{first:#}");
    // Every suite's tests: two each pass in the sandbox, over the layout's five suites.
    assert_eq!(first["counts"], json!({"passed": 10, "failed": 1, "skipped": 0}), "{first:#}");
    assert_eq!(second["compared_with"], json!(runs[0].0), "{second:#}");
    assert_eq!(second["new"], json!([]), "{second:#}");
    assert_eq!(second["still_failing"], json!([{"id": TEST, "step": STEP, "since": runs[0].0}]), "{second:#}");
    assert_eq!(third["compared_with"], json!(runs[1].0), "{third:#}");
    assert_eq!((third["fixed"].clone(), third["failed"].clone()), (json!([TEST]), json!([])), "{third:#}");
}

/// A spot launch EC2 refuses for capacity is kept with its code: the run launches the profile's
/// next type, `status` shows the refusal in `launch_errors`, and the profile's next run tries the
/// refused type last. On the `developers` profile, which no other test runs on.
#[tokio::test]
async fn a_type_short_of_spot_capacity_is_shown_and_tried_last_by_the_next_run() {
    let short = provisioner_e2e::local_stack_state().join("no-spot-capacity");
    std::fs::write(&short, "m7g.2xlarge developers\n").unwrap();
    let first = start("test", "developers", "main");
    std::fs::write(&short, "").unwrap();
    let first_instance = described_instance(first["instance_id"].as_str().unwrap()).await;
    assert_eq!(first_instance.instance_type().unwrap().as_str(), "m6g.2xlarge", "the next type of the profile");
    let status = make_invoke("status", "{}");
    let errors = status.answer["launch_errors"].as_array().unwrap();
    let refused = errors
        .iter()
        .find(|e| e["instance_type"] == "m7g.2xlarge" && e["code"] == "InsufficientInstanceCapacity")
        .unwrap_or_else(|| panic!("{errors:#?}"));
    assert_eq!((refused["market"].as_str(), refused["count"].as_u64()), (Some("spot"), Some(1)), "{refused:#}");
    let cancelled = make_invoke("cancel", &json!({"run_id": first["run_id"]}).to_string());
    assert_eq!(cancelled.exit, 0, "{:#}", cancelled.answer);

    let second = start("test", "developers", "main");
    let second_instance = described_instance(second["instance_id"].as_str().unwrap()).await;
    assert_eq!(second_instance.instance_type().unwrap().as_str(), "m6g.2xlarge", "the refused type is tried last");
    let cancelled = make_invoke("cancel", &json!({"run_id": second["run_id"]}).to_string());
    assert_eq!(cancelled.exit, 0, "{:#}", cancelled.answer);
}

/// A spot interruption (EC2's warning, through the EventBridge rule) ends the attempt and begins
/// the next at once under the same run id; a vanished instance does too; the third and last
/// attempt runs on demand, and it completes the run.
#[tokio::test]
async fn interruptions_begin_the_next_attempt_under_the_same_run_id_and_the_last_runs_on_demand() {
    let cluster = unique("ci-run-");
    let started = start("test", &cluster, "main");
    let run_id = started["run_id"].as_str().unwrap().to_owned();
    let first = started["instance_id"].as_str().unwrap().to_owned();
    assert_eq!(attempts(&started), [(first.clone(), "spot".into(), "running".into())]);

    let retried = interruption_warning(&first);
    assert_eq!(retried.assert_success()["action"], "retried", "{:#}", retried.answer);
    assert_eq!(instance_state(&first).await, "terminated");
    let answer = peek("test", &run_id);
    let second = answer["instance_id"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(answer["run_id"], run_id.as_str());
    assert_eq!(attempts(&answer)[0], (first.clone(), "spot".into(), "interrupted".into()));
    assert_eq!(described_instance(&second).await.instance_lifecycle().map(|l| l.as_str()), Some("spot"));

    // EventBridge delivers at least once: the same warning again changes nothing.
    assert_eq!(interruption_warning(&first).assert_success()["action"], "ignored");

    // The second instance vanishes: EC2's state change says so.
    let ec2 = aws_sdk_ec2::Client::new(&emulator().await);
    ec2.terminate_instances().instance_ids(&second).send().await.unwrap();
    let gone =
        ec2_event("EC2 Instance State-change Notification", json!({"instance-id": second, "state": "terminated"}));
    assert_eq!(gone.assert_success()["action"], "retried", "{:#}", gone.answer);
    let answer = peek("test", &run_id);
    let third = answer["instance_id"].as_str().unwrap().to_owned();
    let seen = attempts(&answer);
    assert_eq!(seen[1], (second.clone(), "spot".into(), "lost".into()));
    assert_eq!(seen[2], (third.clone(), "on-demand".into(), "running".into()));
    assert_eq!(described_instance(&third).await.instance_lifecycle(), None, "the last attempt is on demand");
    let user_data = user_data(&third).await;
    assert!(user_data.contains("ATTEMPT='3'"), "the third attempt's script");

    simulate(&third, None);
    let done = resume("test", &run_id);
    assert_eq!(done.assert_success()["status"], "success", "{:#}", done.answer);
    let outcomes: Vec<String> = attempts(&done.answer).into_iter().map(|(_, _, outcome)| outcome).collect();
    assert_eq!(outcomes, ["interrupted", "lost", "completed"]);
}

/// Out of attempts, the run is lost, naming each attempt by its instance.
#[tokio::test]
async fn a_run_whose_instances_all_vanish_is_lost_naming_each_attempt() {
    let cluster = unique("ci-run-");
    let started = start("build", &cluster, "main");
    let run_id = started["run_id"].as_str().unwrap().to_owned();
    let ec2 = aws_sdk_ec2::Client::new(&emulator().await);
    let mut instance = started["instance_id"].as_str().unwrap().to_owned();
    let mut gone = Vec::new();
    for _ in 0..2 {
        ec2.terminate_instances().instance_ids(&instance).send().await.unwrap();
        gone.push(instance);
        instance = peek("build", &run_id)["instance_id"].as_str().unwrap().to_owned();
    }
    ec2.terminate_instances().instance_ids(&instance).send().await.unwrap();
    gone.push(instance);
    let lost = make_invoke("build", &json!({"run_id": run_id, "wait_seconds": 0}).to_string());
    lost.assert_error("RunLost");
    let message = lost.answer["errorMessage"].as_str().unwrap();
    for (number, instance) in gone.iter().enumerate() {
        assert!(message.contains(&format!("attempt {}: {instance} (", number + 1)), "{message}");
    }
}

/// A run whose step failed is never retried, whatever EC2 says of its instance after.
#[tokio::test]
async fn a_failed_step_is_not_retried() {
    let cluster = unique("ci-run-");
    let started = start("test", &cluster, "main");
    let (run_id, instance) = (started["run_id"].as_str().unwrap(), started["instance_id"].as_str().unwrap());
    simulate(instance, Some("make selftest"));
    let event =
        ec2_event("EC2 Instance State-change Notification", json!({"instance-id": instance, "state": "shutting-down"}));
    assert_ne!(event.assert_success()["action"], "retried", "{:#}", event.answer);
    resume("test", run_id).assert_error("TestsFailed");
    let ec2 = aws_sdk_ec2::Client::new(&emulator().await);
    let tagged = ec2
        .describe_instances()
        .filters(aws_sdk_ec2::types::Filter::builder().name("tag:sliderule:run-id").values(run_id).build())
        .send()
        .await
        .unwrap();
    let count: usize = tagged.reservations().iter().map(|r| r.instances().len()).sum();
    assert_eq!(count, 1, "one instance, never a second");
}

/// `hold_minutes` keeps a failed run's instance up: the answer and `status` say until when and
/// how to connect, a sweep spares it, and `cancel` ends the hold at once.
#[tokio::test]
async fn a_held_instance_survives_a_sweep_and_cancel_ends_its_hold() {
    let cluster = unique("ci-run-");
    let payload = json!({"cluster": cluster, "version": "main", "wait_seconds": 0, "hold_minutes": 30});
    let started = make_invoke("test", &payload.to_string());
    assert_eq!(started.exit, 0, "{:#}", started.answer);
    let answer = &started.answer;
    let (run_id, instance) = (answer["run_id"].as_str().unwrap(), answer["instance_id"].as_str().unwrap());
    assert!(user_data(instance).await.contains("HOLD_MINUTES='30'"));
    simulate(instance, Some("make selftest"));
    let failed = resume("test", run_id);
    failed.assert_error("TestsFailed");
    let message = failed.answer["errorMessage"].as_str().unwrap();
    assert!(message.contains(&format!("aws ssm start-session --target {instance}")), "{message}");
    assert_eq!(instance_state(instance).await, "running", "held");

    make_invoke("sweep", "{}").assert_success();
    assert_eq!(instance_state(instance).await, "running", "a sweep spares a held instance");
    let status = make_invoke("status", "{}");
    let held = status.assert_success()["held"].as_array().unwrap().clone();
    let listed = held.iter().find(|h| h["instance_id"] == instance).expect("status lists the held instance");
    assert!(listed["held_until"].as_str().is_some() && listed["connect"].as_str().unwrap().contains(instance));

    let cancelled = make(&["cluster-cancel", "LOCAL=1", &format!("RUN_ID={run_id}")]);
    assert_eq!(cancelled.assert_success()["outcome"], "failed", "its outcome is unchanged");
    assert_eq!(instance_state(instance).await, "terminated", "the hold ended");
}

async fn user_data(instance_id: &str) -> String {
    let ec2 = aws_sdk_ec2::Client::new(&emulator().await);
    let described = ec2
        .describe_instance_attribute()
        .instance_id(instance_id)
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let encoded = described.user_data().and_then(|v| v.value()).unwrap_or_default();
    let compressed = aws_smithy_types::base64::decode(encoded).unwrap();
    let mut script = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(compressed.as_slice()), &mut script).unwrap();
    script
}

/// `make cluster-cancel RUN_ID=…` ends the run at once: its instance is terminated, its outcome
/// is `cancelled`, and a later wait on it answers `RunCancelled`.
#[tokio::test]
async fn cancel_terminates_a_runs_instance_and_a_later_wait_answers_run_cancelled() {
    let cluster = unique("ci-run-");
    let started = start("test", &cluster, "main");
    let (run_id, instance_id) = (started["run_id"].as_str().unwrap(), started["instance_id"].as_str().unwrap());
    let cancelled = make(&["cluster-cancel", "LOCAL=1", &format!("RUN_ID={run_id}")]);
    let answer = cancelled.assert_success();
    assert_eq!((answer["run_id"].as_str(), answer["outcome"].as_str()), (Some(run_id), Some("cancelled")));
    assert_eq!(instance_state(instance_id).await, "terminated");
    resume("test", run_id).assert_error("RunCancelled");
    let again = make_invoke("cancel", &json!({"run_id": run_id}).to_string());
    assert_eq!(again.assert_success()["outcome"], "cancelled", "cancelling again changes nothing");
    make_invoke("cancel", &json!({"run_id": run_id, "force": true}).to_string()).assert_error("InvalidRequest");
}

#[test]
fn bad_run_events_are_refused() {
    let cases = [
        ("test", r#"{"cluster":"ci-1"}"#),
        ("test", r#"{"cluster":"ci-1","version":"main; reboot"}"#),
        ("test", r#"{"cluster":"ci-1","version":"$(id)"}"#),
        ("test", r#"{"cluster":"ci-1","version":"--upload-pack=x"}"#),
        ("build", r#"{"cluster":"ci-1","version":"main","wait_seconds":900}"#),
        ("build", r#"{"run_id":"build-x; id"}"#),
        ("build", r#"{"run_id":"build-ci-1-20200101t000000-abcd"}"#),
        ("test", r#"{"run_id":"build-ci-1-20200101t000000-abcd"}"#),
        ("build", r#"{"cluster":"ci-1","version":"main","force":true}"#),
        ("build", r#"{"cluster":"ci-1","version":"release/4.x"}"#),
        ("build", r#"{"cluster":"ci-1","version":"latest"}"#),
    ];
    for (function, payload) in cases {
        make_invoke(function, payload).assert_error("InvalidRequest");
    }
    make_invoke("test", r#"{"cluster":"other","version":"main"}"#).assert_error("UnknownCluster");
}

#[test]
fn cluster_test_keeps_invoking_until_the_run_ends() {
    let cluster = unique("ci-run-");
    let target = {
        let cluster = cluster.clone();
        std::thread::spawn(move || {
            make(&["cluster-test", "LOCAL=1", &format!("CLUSTER={cluster}"), "VERSION=main", "WAIT=2"])
        })
    };
    // Play the instance once the target has started the run and answered "running" at least once.
    let started = loop {
        std::thread::sleep(std::time::Duration::from_secs(4));
        let active = start("test", &cluster, "main");
        if active["instance_id"].is_string() {
            break active;
        }
    };
    simulate(started["instance_id"].as_str().unwrap(), None);
    let followed = target.join().unwrap();
    let answer = followed.assert_success();
    assert_eq!(answer["run_id"], started["run_id"]);
    assert!(followed.stderr.contains("still running"), "progress is printed: {}", followed.stderr);
    assert!(followed.stderr.contains("passed  checkout"), "each step is printed: {}", followed.stderr);
    assert!(
        followed.stderr.contains("not applicable  manager-pytests: layout D has no manager"),
        "a step the version lacks is shown as such: {}",
        followed.stderr
    );
}

/// `runner_image` makes an AMI of an instance whose host-tool steps passed, and the next TEST run
/// launches from it, passing what it holds at once.
#[tokio::test]
async fn runner_image_makes_an_image_and_the_next_test_run_launches_from_it() {
    let started = make_invoke("runner_image", r#"{"wait_seconds": 0, "requested_by": "nightly"}"#);
    assert_eq!(started.exit, 0, "{:#} {}", started.answer, started.stderr);
    let run_id = started.answer["run_id"].as_str().unwrap().to_owned();
    assert!(run_id.starts_with("image-ci-runner-image-"), "{run_id}");
    let instance_id = started.answer["instance_id"].as_str().unwrap().to_owned();
    simulate(&instance_id, None);
    let made = resume("runner_image", &run_id);
    let answer = made.assert_success();
    let image_id = answer["image_id"].as_str().unwrap().to_owned();
    assert_eq!(instance_state(&instance_id).await, "terminated", "imaged, then terminated");

    let ec2 = aws_sdk_ec2::Client::new(&emulator().await);
    let described = ec2.describe_images().image_ids(&image_id).send().await.unwrap();
    let image = &described.images()[0];
    let tags: std::collections::BTreeMap<&str, &str> =
        image.tags().iter().map(|t| (t.key().unwrap(), t.value().unwrap())).collect();
    assert_eq!((tags["sliderule:kind"], tags["sliderule:architecture"]), ("runner_image", "arm64"));
    assert_eq!(tags["sliderule:run-id"], run_id);
    assert_eq!(tags["sliderule:plan-hash"].len(), 16);
    // What it holds, as its instance said: the build environment's digest and the tools' versions.
    assert!(tags["sliderule:build-image-digest"].starts_with("sha256:"), "{tags:?}");
    assert!(tags["sliderule:tools"].contains("git=1.0.0") && tags["sliderule:tools"].contains("docker="), "{tags:?}");
    let status = make_invoke("status", "{}").assert_success().clone();
    let listed = status["runner_images"].as_array().unwrap().iter().find(|i| i["image_id"] == image_id.as_str());
    assert_eq!(listed.unwrap()["tools"], tags["sliderule:tools"], "{status:#}");
    let snapshot = image.block_device_mappings()[0].ebs().and_then(|ebs| ebs.snapshot_id()).unwrap();
    let snapshots = ec2.describe_snapshots().snapshot_ids(snapshot).send().await.unwrap();
    let snapshot_tags: Vec<(&str, &str)> =
        snapshots.snapshots()[0].tags().iter().map(|t| (t.key().unwrap(), t.value().unwrap())).collect();
    assert!(snapshot_tags.contains(&("sliderule:provisioner", "true")), "{snapshot_tags:?}");

    // The next TEST run boots the image and passes what it holds at once; the rest runs.
    let cluster = unique("ci-run-");
    let test = start("test", &cluster, "main");
    let chosen = test["runner_image"].as_str().unwrap_or_default();
    assert!(chosen.starts_with("ami-"), "{test:#}");
    assert_eq!(described_instance(test["instance_id"].as_str().unwrap()).await.image_id(), Some(chosen));
    simulate(test["instance_id"].as_str().unwrap(), None);
    let done = resume("test", test["run_id"].as_str().unwrap());
    let answer = done.assert_success();
    let steps = answer["steps"].as_array().unwrap();
    let held = steps.iter().find(|s| s["name"] == "install-tools").unwrap();
    assert_eq!(held["status"], "passed", "{held:#}");
    assert!(held["reason"].as_str().is_some_and(|r| r.contains("runner image")), "{held:#}");
    assert_eq!(held["duration_seconds"], 0.0, "{held:#}");
    let ran = steps.iter().find(|s| s["name"] == "python-client-pytests").unwrap();
    assert!(ran["reason"].is_null() && ran["status"] == "passed", "{ran:#}");
}
