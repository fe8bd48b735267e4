//! End to end through the Lambda emulator, driven by `make invoke LOCAL=1` exactly as callers do.
//! Each test uses its own `ci-…` cluster, so tests share the local stack without interfering.

use jiff::{SignedDuration, Timestamp};
use std::process::Command;

use provisioner_e2e::{destroy_schedules, emulator, make, make_invoke, repo_root, unique};
use serde_json::json;

fn future(minutes: i64) -> String {
    let at = Timestamp::now() + SignedDuration::from_mins(minutes);
    Timestamp::from_second(at.as_second()).unwrap().to_string()
}

async fn stack_status(cluster: &str) -> Option<String> {
    let client = aws_sdk_cloudformation::Client::new(&emulator().await);
    let stacks = client.describe_stacks().stack_name(format!("sliderule-cluster-{cluster}")).send().await.ok()?;
    let status = stacks.stacks()[0].stack_status()?.as_str().to_owned();
    (status != "DELETE_COMPLETE").then_some(status)
}

#[tokio::test]
async fn a_cluster_lives_from_deploy_to_a_fired_schedule() {
    let cluster = unique("ci-e2e-");
    let event = json!({ "cluster": cluster }).to_string();

    let deployed = make_invoke("deploy", &event);
    let answer = deployed.assert_success();
    assert_eq!(answer["cluster"], cluster.as_str());
    assert_eq!(answer["action"], "created");
    assert_eq!(answer["stack_status"], "CREATE_COMPLETE");
    assert_eq!(answer["outputs"]["ClusterName"], cluster.as_str());
    assert_eq!(stack_status(&cluster).await.as_deref(), Some("CREATE_COMPLETE"));

    let again = make_invoke("deploy", &event);
    assert_eq!(again.assert_success()["action"], "already_running");

    let at = future(120);
    let scheduled = make_invoke("schedule_destroy", &json!({ "cluster": cluster, "time_to_destroy": at }).to_string());
    assert_eq!(scheduled.assert_success()["time_to_destroy"], at.as_str());

    // Moving it while more than 5 minutes remain replaces it.
    let later = future(180);
    let moved = make_invoke("schedule_destroy", &json!({ "cluster": cluster, "time_to_destroy": later }).to_string());
    assert_eq!(moved.assert_success()["replaced"].as_array().unwrap().len(), 1);
    let schedules = destroy_schedules(&cluster).await;
    assert_eq!(schedules.len(), 1);
    let schedule = &schedules[0];
    let target = schedule.target().unwrap();
    // The name template.yaml gives the destroy function: the local stack is created from it.
    assert!(target.arn().ends_with(":function:sliderule-provisioner-destroy"), "{}", target.arn());
    assert!(target.role_arn().ends_with(":role/sliderule-provisioner-scheduler"));
    assert!(target.dead_letter_config().is_some());
    assert_eq!(schedule.action_after_completion().map(|a| a.as_str()), Some("DELETE"));

    // A running cluster deploys fine while a delete is scheduled.
    make_invoke("deploy", &event).assert_success();

    // The emulator never fires schedules: fire it as EventBridge would, with its own input.
    let fired = make_invoke("destroy", target.input().unwrap());
    let answer = fired.assert_success();
    assert_eq!(answer["action"], "deleted");
    assert_eq!(answer["schedules_removed"].as_array().unwrap().len(), 1);
    assert_eq!(stack_status(&cluster).await, None);
    assert!(destroy_schedules(&cluster).await.is_empty());

    // Destroying again finds nothing and succeeds.
    assert_eq!(make_invoke("destroy", &event).assert_success()["action"], "already_absent");
}

#[tokio::test]
async fn deploy_of_a_stopped_cluster_scheduled_for_delete_fails() {
    let cluster = unique("ci-e2e-");
    make_invoke("schedule_destroy", &json!({ "cluster": cluster, "time_to_destroy": future(60) }).to_string())
        .assert_success();
    make_invoke("deploy", &json!({ "cluster": cluster }).to_string()).assert_error("ScheduledForDelete");
    assert_eq!(stack_status(&cluster).await, None, "nothing was created");
    make_invoke("destroy", &json!({ "cluster": cluster }).to_string()).assert_success();
    assert!(destroy_schedules(&cluster).await.is_empty());
}

#[tokio::test]
async fn a_schedule_due_within_five_minutes_cannot_be_moved() {
    let cluster = unique("ci-e2e-");
    make_invoke("schedule_destroy", &json!({ "cluster": cluster, "time_to_destroy": future(4) }).to_string())
        .assert_success();
    make_invoke("schedule_destroy", &json!({ "cluster": cluster, "time_to_destroy": future(60) }).to_string())
        .assert_error("TooLateToReschedule");
    assert_eq!(destroy_schedules(&cluster).await.len(), 1, "the due schedule is kept");
    make_invoke("destroy", &json!({ "cluster": cluster }).to_string()).assert_success();
}

#[test]
fn bad_events_are_refused_before_any_aws_call() {
    let cases: &[(&str, &str, &str)] = &[
        ("deploy", r#"{"cluster":"#, "InvalidRequest"),
        ("deploy", "", "InvalidRequest"),
        ("deploy", "[]", "InvalidRequest"),
        ("deploy", r#"{"cluster":"ci-1","force":true}"#, "InvalidRequest"),
        ("deploy", r#"{"cluster":"CI-1"}"#, "InvalidRequest"),
        ("deploy", r#"{"cluster":"ci-1; rm -rf /"}"#, "InvalidRequest"),
        ("deploy", r#"{"cluster":"$(reboot)"}"#, "InvalidRequest"),
        ("deploy", r#"{"cluster":"sliderule"}"#, "InvalidRequest"),
        ("deploy", r#"{"cluster":"other"}"#, "UnknownCluster"),
        ("deploy", r#"{"cluster":"runner"}"#, "InvalidRequest"),
        ("deploy", r#"{"cluster":"ci-1","version":"$(id)"}"#, "InvalidRequest"),
        ("deploy", r#"{"cluster":"ci-1","version":"release/5.x"}"#, "InvalidRequest"),
        ("deploy", r#"{"cluster":"ci-1","version":7}"#, "InvalidRequest"),
        ("destroy", r#"{"cluster":"ci-`id`"}"#, "InvalidRequest"),
        ("destroy", r#"{"cluster":"ci-1","time_to_destroy":"2030-01-01T00:00:00Z"}"#, "InvalidRequest"),
        ("destroy", r#"{"cluster":"developers2"}"#, "UnknownCluster"),
        ("schedule_destroy", r#"{"cluster":"ci-1"}"#, "InvalidRequest"),
        ("schedule_destroy", r#"{"cluster":"ci-1","time_to_destroy":"2020-01-01T00:00:00Z"}"#, "InvalidRequest"),
        ("schedule_destroy", r#"{"cluster":"ci-1","time_to_destroy":"in an hour"}"#, "InvalidRequest"),
        ("schedule_destroy", r#"{"cluster":"ci-1","time_to_destroy":"2030-01-01T00:00:00Z","x":1}"#, "InvalidRequest"),
        ("schedule_destroy", r#"{"cluster":"ci-1\n","time_to_destroy":"2030-01-01T00:00:00Z"}"#, "InvalidRequest"),
        ("schedule_destroy", r#"{"cluster":"other","time_to_destroy":"2030-01-01T00:00:00Z"}"#, "UnknownCluster"),
    ];
    for (function, payload, error_type) in cases {
        let invoked = make_invoke(function, payload);
        assert_eq!(
            (invoked.exit, invoked.error_type()),
            (1, *error_type),
            "{function} {payload}: {:#}",
            invoked.answer
        );
    }
}

/// What the runtime would parse its own way (nesting past its limit, a key twice) and times that
/// are not RFC 3339 to the letter are refused by every function as InvalidRequest.
#[test]
fn events_beyond_the_json_and_rfc3339_the_contract_allows_are_refused() {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let deep_value = format!(r#"{{"cluster":"ci-1","version":{}"main"{}}}"#, "[".repeat(127), "]".repeat(127));
    let at = |time: &str| format!(r#"{{"cluster":"ci-1","time_to_destroy":"{time}"}}"#);
    let cases = [
        ("deploy", deep.clone()),
        ("destroy", deep.clone()),
        ("schedule_destroy", deep.clone()),
        ("test", deep.clone()),
        ("build", deep),
        ("deploy", deep_value),
        ("destroy", r#"{"cluster":"ci-1","cluster":"developers"}"#.to_owned()),
        ("test", r#"{"cluster":"ci-1","version":"main","version":"v1.0.0"}"#.to_owned()),
        ("schedule_destroy", at("2030-01-01T16:17Z")),
        ("schedule_destroy", at("2030-01-01T16:17:00+24:00")),
        ("schedule_destroy", at("2030-01-01T16:17:00+05")),
    ];
    for (function, payload) in cases {
        let invoked = make_invoke(function, &payload);
        assert_eq!(
            (invoked.exit, invoked.error_type()),
            (1, "InvalidRequest"),
            "{function} {payload:.80}: {:#}",
            invoked.answer
        );
    }
}

/// `make -n` (and -q, -t) of an invoke goal prints what it would run and changes nothing.
#[test]
fn a_dry_run_of_an_invoke_goal_changes_nothing() {
    let cluster = unique("ci-e2e-");
    make_invoke("deploy", &json!({ "cluster": cluster }).to_string()).assert_success();
    let cluster_arg = format!("CLUSTER={cluster}");
    let payload_arg = format!("PAYLOAD={}", json!({ "cluster": cluster }));
    let dry_runs: [&[&str]; 4] = [
        &["-n", "cluster-destroy", "LOCAL=1", &cluster_arg],
        &["--dry-run", "invoke", "LOCAL=1", "FUNCTION=destroy", &payload_arg],
        &["-q", "cluster-destroy", "LOCAL=1", &cluster_arg],
        &["-t", "cluster-destroy", "LOCAL=1", &cluster_arg],
    ];
    for args in dry_runs {
        let output = Command::new("make").args(args).current_dir(repo_root()).output().expect("make runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("would run: ") && stdout.contains("tools/local/invoke.py destroy --local"),
            "{args:?}: {stdout}"
        );
        let again = make_invoke("deploy", &json!({ "cluster": cluster }).to_string());
        assert_eq!(again.assert_success()["action"], "already_running", "{args:?} destroyed nothing");
    }
    make_invoke("destroy", &json!({ "cluster": cluster }).to_string()).assert_success();
}

#[test]
fn the_cluster_targets_wrap_invoke_with_the_contract_exit_codes() {
    let cluster = unique("ci-e2e-");
    let deployed = make(&["cluster-deploy", "LOCAL=1", &format!("CLUSTER={cluster}")]);
    deployed.assert_success();
    let scheduled = make(&["cluster-schedule-destroy", "LOCAL=1", &format!("CLUSTER={cluster}"), "TTL=90"]);
    scheduled.assert_success();
    let at =
        make(&["cluster-schedule-destroy", "LOCAL=1", &format!("CLUSTER={cluster}"), &format!("AT={}", future(100))]);
    at.assert_success();
    let destroyed = make(&["cluster-destroy", "LOCAL=1", &format!("CLUSTER={cluster}")]);
    assert_eq!(destroyed.assert_success()["schedules_removed"].as_array().unwrap().len(), 1);

    let refused = make(&["cluster-deploy", "LOCAL=1", "CLUSTER=x'; touch /tmp/provisioner-pwned; '"]);
    assert_eq!((refused.exit, refused.error_type()), (1, "InvalidRequest"));
    assert!(!std::path::Path::new("/tmp/provisioner-pwned").exists());

    let unreachable =
        make(&["invoke", "LOCAL=1", "LOCAL_LAMBDA_PORT=1", "FUNCTION=deploy", r#"PAYLOAD={"cluster":"ci-1"}"#]);
    assert_eq!(unreachable.exit, 2, "{:#}", unreachable.answer);
}

#[tokio::test]
async fn a_version_without_images_creates_nothing_and_a_running_cluster_says_which_version_runs() {
    let cluster = unique("ci-version-");
    let missing = make(&["cluster-deploy", "LOCAL=1", &format!("CLUSTER={cluster}"), "VERSION=v0.0.1"]);
    missing.assert_error("ImagesMissing");
    let message = missing.answer["errorMessage"].as_str().unwrap();
    assert!(message.contains("sliderule, ilb, monitor, monitor-agent, ams"), "{message}");
    assert!(message.contains(&format!("make cluster-build CLUSTER={cluster} VERSION=v0.0.1")), "{message}");
    assert_eq!(stack_status(&cluster).await, None, "nothing was created");

    // The local registry holds the profile's default version, as an account does after a release.
    let deployed = make(&["cluster-deploy", "LOCAL=1", &format!("CLUSTER={cluster}")]);
    let answer = deployed.assert_success();
    assert_eq!((answer["version"].as_str(), answer["version_differs"].as_bool()), (Some("latest"), Some(false)));
    assert_eq!(answer["outputs"]["Url"], format!("https://{cluster}.slideruleearth.io"));
    assert_eq!(answer["outputs"]["IsPublic"], "true", "ci-* clusters are public");

    let other = make(&["cluster-deploy", "LOCAL=1", &format!("CLUSTER={cluster}"), "VERSION=main"]);
    let answer = other.assert_success();
    assert_eq!(answer["action"], "already_running");
    assert_eq!((answer["version"].as_str(), answer["requested_version"].as_str()), (Some("latest"), Some("unstable")));
    assert_eq!(answer["version_differs"], true);
    assert!(answer["note"].as_str().unwrap().contains("runs version 'latest'"), "{answer:#}");
    make(&["cluster-destroy", "LOCAL=1", &format!("CLUSTER={cluster}")]).assert_success();
}
