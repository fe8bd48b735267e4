//! Keeping watch, end to end on the local stack: a cluster's default lifetime, the sweeper, and
//! `make status`. The sweeper runs here alongside every other test, as it runs in an account
//! alongside everything else: each test checks only what it made.

use std::process::Command;

use jiff::{SignedDuration, Timestamp};
use provisioner_core::aws::{ec2::Ec2Instances, Aws};
use provisioner_core::domain::{tags, RunId};
use provisioner_core::ports::Instances;
use provisioner_core::testing::contract;
use provisioner_e2e::{destroy_schedules, emulator, make, make_invoke, repo_root, unique};
use serde_json::{json, Value};

/// The destroy schedules of `cluster`, with when each fires.
async fn destroy_schedules_of(cluster: &str) -> Vec<(String, Timestamp)> {
    let at = |expression: &str| {
        let at = expression.strip_prefix("at(").and_then(|e| e.strip_suffix(')')).unwrap();
        format!("{at}Z").parse().unwrap()
    };
    destroy_schedules(cluster)
        .await
        .iter()
        .map(|s| (s.name().unwrap().to_owned(), at(s.schedule_expression().unwrap())))
        .collect()
}

async fn instance_state(instance_id: &str) -> String {
    let ec2 = aws_sdk_ec2::Client::new(&emulator().await);
    let described = ec2.describe_instances().instance_ids(instance_id).send().await.unwrap();
    described.reservations()[0].instances()[0].state().unwrap().name().unwrap().as_str().to_owned()
}

fn sweep() -> Value {
    make_invoke("sweep", "{}").assert_success().clone()
}

/// The sweep's action on `target`, if it took one.
fn action_on<'a>(swept: &'a Value, target: &str) -> Option<&'a Value> {
    swept["actions"].as_array().unwrap().iter().find(|action| action["target"] == target)
}

#[tokio::test]
async fn a_deployed_cluster_gets_its_destroy_schedule_at_the_profile_default() {
    let cluster = unique("ci-ttl-");
    let before = Timestamp::now();
    let deployed = make(&["cluster-deploy", "LOCAL=1", &format!("CLUSTER={cluster}")]);
    let answer = deployed.assert_success();
    let at: Timestamp = answer["time_to_destroy"].as_str().expect("the response says when").parse().unwrap();
    // The ci profile's default lifetime: 240 minutes.
    let lifetime = at.duration_since(before);
    assert!(lifetime >= SignedDuration::from_mins(239) && lifetime <= SignedDuration::from_mins(241), "{lifetime:?}");
    let schedules = destroy_schedules_of(&cluster).await;
    assert_eq!(schedules.iter().map(|(_, when)| *when).collect::<Vec<_>>(), [at], "{schedules:?}");

    // Beyond the profile's maximum (720 minutes) a schedule is refused and the default stays.
    let far = make(&["cluster-schedule-destroy", "LOCAL=1", &format!("CLUSTER={cluster}"), "TTL=721"]);
    far.assert_error("InvalidRequest");
    assert!(far.answer["errorMessage"].as_str().unwrap().contains("maximum lifetime of 720 minutes"));
    assert_eq!(destroy_schedules_of(&cluster).await.len(), 1);

    make(&["cluster-destroy", "LOCAL=1", &format!("CLUSTER={cluster}")]).assert_success();
    assert!(destroy_schedules_of(&cluster).await.is_empty());
}

#[tokio::test]
async fn the_sweeper_retries_a_run_whose_instance_vanished_and_terminates_an_expired_instance() {
    // A run whose instance vanished (a spot interruption) while nobody was waiting on it.
    let cluster = unique("ci-sweep-");
    let started = make_invoke("test", &json!({"cluster": cluster, "version": "main", "wait_seconds": 0}).to_string());
    let started = started.answer.clone();
    let run_id = started["run_id"].as_str().unwrap().to_owned();
    let run_instance = started["instance_id"].as_str().unwrap().to_owned();
    let ec2 = aws_sdk_ec2::Client::new(&emulator().await);
    ec2.terminate_instances().instance_ids(&run_instance).send().await.unwrap();

    // An instance of the provisioner's whose time ran out (a deadman that did not fire).
    let instances = Ec2Instances::new(&Aws::from_config(emulator().await));
    let expired_at = (Timestamp::now() - SignedDuration::from_mins(1)).to_string();
    let stray_run = RunId::parse(&unique("test-ci-gone-20261101t000000-")).unwrap();
    let mut spec = contract::launch_spec(instances.latest_image("arm64").await.unwrap(), &stray_run);
    spec.tags.push((tags::EXPIRES.into(), expired_at.clone()));
    let stray = instances.launch(&spec).await.unwrap();

    let swept = sweep();
    let resumed = action_on(&swept, &run_id).unwrap_or_else(|| panic!("the run is resumed: {swept:#}"));
    assert_eq!(resumed["action"], "resume_run");
    assert!(resumed["result"].as_str().unwrap().starts_with("began attempt 2 on i-"), "{resumed:#}");
    assert_eq!(resumed["reason"], format!("its instance {run_instance} is gone"));
    let terminated = action_on(&swept, &stray).unwrap_or_else(|| panic!("the instance is terminated: {swept:#}"));
    assert_eq!(terminated["action"], "terminate_instance");
    assert_eq!(terminated["reason"], format!("its run's time limit passed at {expired_at}"));
    assert_eq!(instance_state(&stray).await, "terminated");

    // Whoever asks next hears of the second attempt; the next sweep has nothing of ours to do.
    let asked = make_invoke("test", &json!({"run_id": run_id, "wait_seconds": 0}).to_string());
    assert_eq!(asked.answer["attempts"].as_array().map(Vec::len), Some(2), "{:#}", asked.answer);
    let again = sweep();
    assert!(action_on(&again, &run_id).is_none() && action_on(&again, &stray).is_none(), "{again:#}");
    make(&["cluster-cancel", "LOCAL=1", &format!("RUN_ID={run_id}")]).assert_success();
}

#[tokio::test]
async fn make_status_lists_a_running_cluster_a_run_in_progress_and_their_costs() {
    let cluster = unique("ci-status-");
    make(&["cluster-deploy", "LOCAL=1", &format!("CLUSTER={cluster}")]).assert_success();
    let started = make_invoke("test", &json!({"cluster": cluster, "version": "v4.5.1", "wait_seconds": 0}).to_string());
    let run_id = started.answer["run_id"].as_str().unwrap().to_owned();
    let run_instance = started.answer["instance_id"].as_str().unwrap().to_owned();
    // The profile's first type, unless a recent refusal or interruption (another test's) moved it last.
    let run_type = started.answer["attempts"][0]["instance_type"].as_str().unwrap().to_owned();

    let answer = make_invoke("status", "{}").assert_success().clone();
    let listed = answer["clusters"].as_array().unwrap().iter().find(|c| c["cluster"] == cluster.as_str()).unwrap();
    assert_eq!((listed["profile"].as_str(), listed["stack_status"].as_str()), (Some("ci"), Some("CREATE_COMPLETE")));
    assert!(listed["time_to_destroy"].is_string(), "{listed}");
    assert_eq!(listed["cost_per_hour_usd"], 0.43, "two c8g.large and a t4g.2xlarge");
    let run = answer["runs"].as_array().unwrap().iter().find(|r| r["run_id"] == run_id.as_str()).unwrap();
    assert_eq!((run["kind"].as_str(), run["cluster"].as_str()), (Some("test"), Some(cluster.as_str())));
    assert_eq!(
        (run["instance_id"].as_str(), run["instance_type"].as_str()),
        (Some(run_instance.as_str()), Some(run_type.as_str()))
    );
    assert!(run["cost_so_far_usd"].is_number() && run["steps_total"].as_u64() > Some(5), "{run}");

    let output = Command::new("make")
        .args(["-s", "--no-print-directory", "status", "LOCAL=1"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let tables = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{tables}{}", String::from_utf8_lossy(&output.stderr));
    let cluster_row = tables
        .lines()
        .find(|line| line.trim_start().starts_with(&format!("{cluster} ")))
        .unwrap_or_else(|| panic!("{tables}"));
    assert!(cluster_row.contains("CREATE_COMPLETE") && cluster_row.contains("$0.43"), "{cluster_row}");
    let run_row = tables.lines().find(|line| line.contains(&run_id)).unwrap_or_else(|| panic!("{tables}"));
    assert!(run_row.contains(&run_instance) && run_row.contains(&run_type) && run_row.contains('$'), "{run_row}");
    for heading in [
        "Clusters (",
        "Active runs (",
        "Recent runs (",
        "The sweeper would act on (",
        "Spend this month (",
        "Launch errors, last 7 days (",
        "Time to start, last 7 days (",
    ] {
        assert!(tables.contains(heading), "{heading}: {tables}");
    }
    // Each profile's spend this month against its budget: the cluster and the run count in ci's.
    let month = Timestamp::now().strftime("%Y-%m").to_string();
    let budgets = answer["budgets"].as_array().unwrap();
    let profiles: Vec<(&str, f64)> =
        budgets.iter().map(|b| (b["profile"].as_str().unwrap(), b["budget_usd"].as_f64().unwrap())).collect();
    assert_eq!(profiles, [("developers", 500.0), ("ci", 750.0)]);
    let ci = &budgets[1];
    assert_eq!(ci["month"].as_str(), Some(month.as_str()));
    let (spent, clusters, runs) =
        (ci["spent_usd"].as_f64().unwrap(), ci["clusters_usd"].as_f64().unwrap(), ci["runs_usd"].as_f64().unwrap());
    assert!((spent - (clusters + runs)).abs() < 0.011 && spent >= 0.0, "{ci}");
    let running: Vec<&str> = ci["running"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(running.iter().any(|r| r.starts_with(&format!("cluster {cluster} ("))), "{running:?}");
    assert!(running.iter().any(|r| r.contains(&run_id)), "{running:?}");
    let spend_row =
        tables.lines().find(|line| line.trim_start().starts_with("ci ")).unwrap_or_else(|| panic!("{tables}"));
    assert!(spend_row.contains("$750.00"), "{spend_row}");
    // A cluster's status shows its profile's spend alone.
    let one = make_invoke("status", &json!({"cluster": cluster}).to_string()).assert_success().clone();
    let one: Vec<&str> = one["budgets"].as_array().unwrap().iter().filter_map(|b| b["profile"].as_str()).collect();
    assert_eq!(one, ["ci"]);

    // The nightly's job summary: every step of the run, from the same answer.
    let answer_file = std::env::temp_dir().join(format!("{cluster}-status.json"));
    std::fs::write(&answer_file, answer.to_string()).unwrap();
    let summary = Command::new("python3")
        .arg(repo_root().join("tools/local/run_summary.py"))
        .args([answer_file.to_str().unwrap(), &cluster, "test", "build"])
        .output()
        .unwrap();
    std::fs::remove_file(&answer_file).unwrap();
    let summary = String::from_utf8_lossy(&summary.stdout);
    assert!(summary.contains(&format!("### test run `{run_id}`: running")), "{summary}");
    assert!(summary.contains("| checkout | pending | - | - |"), "{summary}");
    assert_eq!(
        summary.lines().filter(|line| line.starts_with("| ") && !line.starts_with("| step")).count(),
        run["steps_total"].as_u64().unwrap() as usize + 1,
        "{summary}"
    );
    assert!(summary.contains(&format!("### build: no run of {cluster} found")), "{summary}");

    // Leave nothing: the run is cancelled, its instance terminated, and the cluster destroyed.
    make(&["cluster-cancel", "LOCAL=1", &format!("RUN_ID={run_id}")]).assert_success();
    assert_eq!(instance_state(&run_instance).await, "terminated");
    make_invoke("test", &json!({"run_id": run_id, "wait_seconds": 0}).to_string()).assert_error("RunCancelled");
    make(&["cluster-destroy", "LOCAL=1", &format!("CLUSTER={cluster}")]).assert_success();
}

#[test]
fn status_and_sweep_refuse_events_they_do_not_take() {
    make_invoke("sweep", r#"{"cluster":"ci-1"}"#).assert_error("InvalidRequest");
    for function in ["status", "sweep"] {
        make_invoke(function, "[]").assert_error("InvalidRequest");
        make_invoke(function, r#"{"force":true}"#).assert_error("InvalidRequest");
    }
    make_invoke("status", r#"{"cluster":"Not A Name"}"#).assert_error("InvalidRequest");
    make_invoke("status", r#"{"cluster":"nobody"}"#).assert_error("UnknownCluster");
}

/// Every operation on a cluster is in its history: `status {"cluster"}` answers that cluster
/// alone, with its operations newest first (who, when, outcome, version), and `make status
/// CLUSTER=` prints them.
#[test]
fn status_of_a_cluster_shows_its_history() {
    let cluster = unique("ci-hist-");
    let by = |goal: &str, extra: &[&str]| {
        let mut args = vec!["-s", goal, "LOCAL=1"];
        let named = format!("CLUSTER={cluster}");
        args.push(&named);
        args.extend(extra);
        let output = Command::new("make")
            .args(&args)
            .env("PROVISIONER_REQUESTED_BY", "ana@example.org")
            .current_dir(repo_root())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    by("cluster-deploy", &[]);
    by("cluster-schedule-destroy", &["TTL=120"]);
    by("cluster-destroy", &[]);
    let status = make_invoke("status", &json!({"cluster": cluster}).to_string());
    let answer = status.assert_success();
    assert!(answer["clusters"].as_array().unwrap().is_empty(), "destroyed: {answer:#}");
    let history: Vec<(String, String, String)> = answer["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |key: &str| e[key].as_str().unwrap_or_default().to_owned();
            (text("operation"), text("requested_by"), text("outcome"))
        })
        .collect();
    let who = "ana@example.org".to_owned();
    assert_eq!(
        history,
        [
            ("destroy".into(), who.clone(), "success".into()),
            ("schedule_destroy".into(), who.clone(), "success".into()),
            ("deploy".into(), who.clone(), "success".into())
        ]
    );
    let printed = by("status", &[]);
    assert!(printed.contains("History (3, newest first)") && printed.contains("schedule_destroy"), "{printed}");
}

/// Who asked (`requested_by`) is recorded on the stack, the schedule and the run, and `status`
/// shows it; the Makefile's goals fill it in.
#[tokio::test]
async fn who_asked_is_recorded_and_shown_by_status() {
    let cluster = unique("ci-who-");
    let deployed = make_invoke("deploy", &json!({"cluster": cluster, "requested_by": "ana@example.org"}).to_string());
    deployed.assert_success();
    let cloudformation = aws_sdk_cloudformation::Client::new(&emulator().await);
    let stack =
        cloudformation.describe_stacks().stack_name(format!("sliderule-cluster-{cluster}")).send().await.unwrap();
    let tagged = stack.stacks()[0]
        .tags()
        .iter()
        .any(|t| t.key() == Some(tags::REQUESTED_BY) && t.value() == Some("ana@example.org"));
    assert!(tagged, "{:?}", stack.stacks()[0].tags());
    let run = make_invoke(
        "test",
        &json!({"cluster": cluster, "version": "main", "wait_seconds": 0, "requested_by": "octocat+run-42"})
            .to_string(),
    );
    assert_eq!(run.answer["requested_by"], "octocat+run-42", "{:#}", run.answer);
    let by_make = std::process::Command::new("make")
        .args(["-s", "cluster-schedule-destroy", "LOCAL=1", &format!("CLUSTER={cluster}"), "TTL=120"])
        .env("PROVISIONER_REQUESTED_BY", "ben")
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(by_make.status.success(), "{}", String::from_utf8_lossy(&by_make.stderr));

    let status = make_invoke("status", "{}");
    let answer = status.assert_success();
    let listed = answer["clusters"].as_array().unwrap().iter().find(|c| c["cluster"] == cluster.as_str()).unwrap();
    assert_eq!(
        (listed["requested_by"].as_str(), listed["destroy_requested_by"].as_str()),
        (Some("ana@example.org"), Some("ben"))
    );
    let listed = answer["runs"].as_array().unwrap().iter().find(|r| r["run_id"] == run.answer["run_id"]).unwrap();
    assert_eq!(listed["requested_by"], "octocat+run-42");

    make(&["cluster-cancel", "LOCAL=1", &format!("RUN_ID={}", run.answer["run_id"].as_str().unwrap())])
        .assert_success();
    make(&["cluster-destroy", "LOCAL=1", &format!("CLUSTER={cluster}")]).assert_success();
}

/// `"dry_run": true` answers the plan of every function that takes it: the branch and the writes
/// it would make; the SDK's call log it answers with holds only reads, and nothing was made.
/// `DRY_RUN=1` on the Makefile's goals asks for it.
#[tokio::test]
async fn a_dry_run_answers_the_plan_and_makes_only_reads() {
    let cluster = unique("ci-dry-");
    let reads_only = |answer: &Value| {
        assert_eq!(answer["status"], "plan", "{answer:#}");
        let calls: Vec<&str> = answer["aws_calls"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(!calls.is_empty(), "{answer:#}");
        let writes: Vec<&&str> = calls.iter().filter(|call| provisioner_core::service::plan::is_write(call)).collect();
        assert!(writes.is_empty(), "a dry run wrote: {writes:?}");
    };
    let plan = make_invoke("deploy", &json!({"cluster": cluster, "dry_run": true}).to_string());
    let answer = plan.assert_plan();
    reads_only(answer);
    let writes: Vec<&str> = answer["plan"].as_array().unwrap().iter().filter_map(|w| w["write"].as_str()).collect();
    assert_eq!(writes, ["CloudFormation.CreateStack", "Scheduler.CreateSchedule"]);
    let cloudformation = aws_sdk_cloudformation::Client::new(&emulator().await);
    let described = cloudformation.describe_stacks().stack_name(format!("sliderule-cluster-{cluster}")).send().await;
    assert!(described.is_err(), "no stack was made");

    let at = (Timestamp::now() + SignedDuration::from_hours(2)).strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let plan = make_invoke(
        "schedule_destroy",
        &json!({"cluster": cluster, "time_to_destroy": at, "dry_run": true}).to_string(),
    );
    reads_only(plan.assert_plan());
    let plan = make_invoke("destroy", &json!({"cluster": cluster, "dry_run": true}).to_string());
    reads_only(plan.assert_plan());
    for kind in ["test", "build"] {
        let plan = make_invoke(kind, &json!({"cluster": cluster, "version": "main", "dry_run": true}).to_string());
        let answer = plan.assert_plan();
        reads_only(answer);
        let launch = answer["plan"].as_array().unwrap().iter().find(|w| w["write"] == "EC2.RunInstances").unwrap();
        assert!(launch["user_data_bytes"].as_u64().unwrap() <= 16_384, "{launch:#}");
        assert_eq!(launch["market"], "spot");
    }
    // The same errors as the call; a bad dry_run is refused.
    make_invoke("deploy", &json!({"cluster": "nobody", "dry_run": true}).to_string()).assert_error("UnknownCluster");
    make_invoke("deploy", &json!({"cluster": cluster, "dry_run": "yes"}).to_string()).assert_error("InvalidRequest");
    make_invoke("status", &json!({"dry_run": true}).to_string()).assert_error("InvalidRequest");

    // Through the Makefile.
    let output = Command::new("make")
        .args(["-s", "cluster-deploy", "LOCAL=1", &format!("CLUSTER={cluster}"), "DRY_RUN=1"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    reads_only(&answer);
    assert!(cloudformation.describe_stacks().stack_name(format!("sliderule-cluster-{cluster}")).send().await.is_err());
}

/// `destroy` answers exactly one of `logs` (where its instances copied their containers' logs,
/// through Run Command, before the stack went) and `logs_note` (why none were kept).
#[test]
fn destroy_says_where_the_clusters_logs_went_or_why_none_were_kept() {
    let cluster = unique("ci-logs-");
    make_invoke("deploy", &json!({"cluster": cluster}).to_string()).assert_success();
    let destroyed = make_invoke("destroy", &json!({"cluster": cluster}).to_string());
    let answer = destroyed.assert_success();
    let logs = answer["logs"].as_str().unwrap_or_else(|| panic!("logs: {answer:#}"));
    assert!(logs.starts_with("s3://") && logs.contains(&format!("/clusters/{cluster}/")), "{logs}");
    assert!(answer.get("logs_note").is_none(), "exactly one: {answer:#}");
    let again = make_invoke("destroy", &json!({"cluster": cluster}).to_string());
    let answer = again.assert_success();
    assert_eq!((answer.get("logs"), answer["logs_note"].as_str()), (None, Some("there was no cluster")));
}

/// Thirty minutes before a destroy schedule fires, the sweeper warns whoever made it (through the
/// alert topic, with their name as the message attribute a subscription filters on), once.
#[test]
fn the_sweeper_warns_once_before_a_scheduled_destroy() {
    let cluster = unique("ci-warn-");
    make_invoke("deploy", &json!({"cluster": cluster}).to_string()).assert_success();
    let at = (Timestamp::now() + SignedDuration::from_mins(20)).strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let scheduled = json!({"cluster": cluster, "time_to_destroy": at, "requested_by": "ana@example.org"});
    make_invoke("schedule_destroy", &scheduled.to_string()).assert_success();
    let warning = |swept: &Value| {
        swept["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["action"] == "warn_destroy" && a["target"] == cluster.as_str())
            .cloned()
    };
    // Other tests sweep too: whichever sweep comes first warns, and no other does.
    let sweeps: Vec<Value> = (0..2).map(|_| make_invoke("sweep", "{}").assert_success().clone()).collect();
    assert!(sweeps.iter().filter_map(warning).count() <= 1, "once: {sweeps:#?}");
    let status = make_invoke("status", &json!({"cluster": cluster}).to_string());
    let history = status.assert_success()["history"].as_array().unwrap().clone();
    let warnings: Vec<&Value> = history.iter().filter(|e| e["operation"] == "destroy_warning").collect();
    assert_eq!(warnings.len(), 1, "{history:#?}");
    let detail = warnings[0]["detail"].as_str().unwrap();
    assert!(detail.starts_with("ana@example.org and the alert topic: destroy at "), "{detail}");
    make_invoke("destroy", &json!({"cluster": cluster}).to_string()).assert_success();
}
