//! TEST and BUILD on fakes with paused time: launching, finding the active run, waiting,
//! concluding, and every way a run can end.

use jiff::{SignedDuration, Timestamp};

use crate::domain::{AttemptOutcome, Market, RunId, RunKind, RunRequest, RunState, StepStatus};
use crate::domain::{ClusterName, GitRef};
use crate::ports::{Clock, InstanceState, Instances};
use crate::testing::{Fault, RunWorld};

const NOW: &str = "2026-11-23T12:00:00Z";

/// Long enough for a start whose calls meet faults (each costs the SDK's retries) to finish.
const FAULTED_START_WAIT: u64 = 120;

fn start(cluster: &str, version: &str, wait: u64) -> RunRequest {
    RunRequest::Start {
        cluster: ClusterName::parse(cluster).unwrap(),
        version: GitRef::parse(version).unwrap(),
        wait_seconds: Some(wait),
        hold_minutes: 0,
        requested_by: None,
    }
}

fn resume(run_id: &RunId, wait: u64) -> RunRequest {
    RunRequest::Resume { run_id: run_id.clone(), wait_seconds: Some(wait) }
}

#[tokio::test(start_paused = true)]
async fn a_test_run_launches_one_tagged_spot_instance_and_answers_running() {
    let world = RunWorld::new(NOW);
    let response = world.runner.run(RunKind::Test, start("ci-1", "v4.5.1", 0), &world.invocation("r1")).await.unwrap();
    assert_eq!(response.status, "running");
    assert_eq!(response.state, RunState::Running);
    assert!(response.run_id.as_str().starts_with("test-ci-1-20261123t120000-"));
    assert_eq!(response.steps[0].name, "checkout");
    assert!(response.steps.iter().all(|s| s.status == StepStatus::Pending));

    let launches = world.instances.launches();
    assert_eq!(launches.len(), 1);
    let launch = &launches[0];
    assert_eq!(launch.image_id, "ami-al2023-arm64");
    assert_eq!(launch.instance_type, "m7g.2xlarge", "32 GiB first, for the debug build");
    assert_eq!(launch.subnet_id.as_deref(), Some("subnet-a"));
    assert_eq!(launch.volume_gb, 100);
    assert_eq!(launch.client_token, response.run_id.launch_token(1, 0));
    assert!(launch.user_data.script().contains("\nshutdown -h +180\n"));
    assert!(launch.user_data.script().contains("VERSION='v4.5.1'"));
    assert!(launch.user_data.script().contains("IMAGE_TAG='v4.5.1'"));
    let tags: std::collections::BTreeMap<_, _> = launch.tags.iter().cloned().collect();
    assert_eq!(tags["sliderule:run-id"], response.run_id.as_str());
    assert_eq!(tags["sliderule:kind"], "test");
    assert_eq!(tags["sliderule:cluster"], "ci-1");
    assert_eq!(tags["sliderule:expires-at"], "2026-11-23T15:00:00Z");
}

#[tokio::test(start_paused = true)]
async fn starting_the_same_run_twice_returns_the_active_run_and_launches_nothing() {
    let world = RunWorld::new(NOW);
    let first = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap();
    let again = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r2")).await.unwrap();
    assert_eq!(again.run_id, first.run_id);
    assert_eq!(world.instances.launches().len(), 1);
    // Another version, kind or cluster is another run.
    world.runner.run(RunKind::Test, start("ci-1", "v1", 0), &world.invocation("r3")).await.unwrap();
    world.runner.run(RunKind::Build, start("ci-1", "main", 0), &world.invocation("r4")).await.unwrap();
    world.runner.run(RunKind::Test, start("ci-2", "main", 0), &world.invocation("r5")).await.unwrap();
    assert_eq!(world.instances.launches().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_steps_all_pass_succeeds_and_its_instance_is_terminated() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap();
    let names: Vec<String> = started.steps.iter().map(|s| s.name.clone()).collect();
    let passed: Vec<(&str, StepStatus)> = names.iter().map(|n| (n.as_str(), StepStatus::Passed)).collect();
    world.runs.report(&started.run_id, &passed, Some("succeeded"));

    let done = world.runner.run(RunKind::Test, resume(&started.run_id, 60), &world.invocation("r2")).await.unwrap();
    assert_eq!((done.status, done.state), ("success", RunState::Succeeded));
    assert_eq!(done.commit.as_deref(), Some("0123456789abcdef0123456789abcdef01234567"));
    assert_eq!(world.instances.terminated(), vec![started.instance_id.clone().unwrap()]);
    // Asking again answers the same, and a new start is a new run.
    let again = world.runner.run(RunKind::Test, resume(&started.run_id, 0), &world.invocation("r3")).await.unwrap();
    assert_eq!(again.status, "success");
    let next = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r4")).await.unwrap();
    assert_ne!(next.run_id, started.run_id);
}

#[tokio::test(start_paused = true)]
async fn a_failed_step_fails_the_run_naming_the_steps_and_the_logs() {
    for kind in [RunKind::Test, RunKind::Build] {
        let world = RunWorld::new(NOW);
        let started = world.runner.run(kind, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap();
        let failing = started.steps[2].name.clone();
        let skipped = started.steps[3].name.clone();
        world.runs.report(
            &started.run_id,
            &[("checkout", StepStatus::Passed), (&failing, StepStatus::Failed), (&skipped, StepStatus::Skipped)],
            Some("failed"),
        );
        let error = world.runner.run(kind, resume(&started.run_id, 60), &world.invocation("r2")).await.unwrap_err();
        let expected = if kind == RunKind::Test { "TestsFailed" } else { "BuildFailed" };
        assert_eq!(error.code(), expected);
        let text = error.to_string();
        assert!(text.contains(&format!("steps failed: {failing}")) && text.contains(&skipped), "{text}");
        let (instance, role) =
            (started.instance_id.as_deref().unwrap(), format!("AROA{}RUNNER", kind.as_str().to_uppercase()));
        assert!(text.contains(&format!("s3://sliderule-provisioner-runs/runs/{role}:{instance}/")), "{text}");
        assert_eq!(world.instances.terminated().len(), 1);
    }
}

/// The answer names the log of every step that ran, the running one's too (it is uploaded while
/// the step runs), and none for a step that has not started.
#[tokio::test(start_paused = true)]
async fn the_answer_names_the_log_of_every_step_that_ran_the_running_one_included() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap();
    let running = started.steps[1].name.clone();
    world.runs.report(&started.run_id, &[("checkout", StepStatus::Passed), (&running, StepStatus::Running)], None);
    let answer = world.runner.run(RunKind::Test, resume(&started.run_id, 0), &world.invocation("r2")).await.unwrap();
    // The instance's own prefix, named by its caller id (the runner role's id and the instance).
    let instance = started.instance_id.as_deref().unwrap();
    let location = format!("s3://sliderule-provisioner-runs/runs/AROATESTRUNNER:{instance}/");
    assert_eq!(answer.steps[0].log.as_deref(), Some(format!("{location}checkout.log").as_str()));
    assert_eq!(answer.steps[1].log.as_deref(), Some(format!("{location}{running}.log").as_str()));
    assert!(answer.steps[2..].iter().all(|step| step.log.is_none()), "{:?}", answer.steps);
}

/// Each way an instance vanishes ends its attempt as lost and begins the next, the last on
/// demand; out of attempts, the run is lost, naming each attempt by its instance.
#[tokio::test(start_paused = true)]
async fn a_run_whose_instances_vanish_before_reporting_is_retried_then_lost() {
    for vanished in
        [None, Some(InstanceState::Terminated), Some(InstanceState::ShuttingDown), Some(InstanceState::Stopped)]
    {
        let world = RunWorld::new(NOW);
        let started = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap();
        let mut gone = Vec::new();
        for attempt in 1..=3 {
            let record = world.runs.record(&started.run_id).unwrap();
            assert_eq!(record.attempt_number(), attempt, "{vanished:?}");
            let instance = record.instance_id.clone().unwrap();
            world.instances.set_state(&instance, vanished);
            gone.push(instance);
            let answer = world.runner.run(RunKind::Test, resume(&started.run_id, 0), &world.invocation("r2")).await;
            if attempt < 3 {
                let answer = answer.unwrap();
                assert_eq!(
                    (answer.run_id.clone(), answer.attempts.len()),
                    (started.run_id.clone(), attempt as usize + 1)
                );
                assert_eq!(answer.attempts[attempt as usize - 1].outcome, AttemptOutcome::Lost);
                continue;
            }
            let error = answer.unwrap_err();
            assert_eq!(error.code(), "RunLost", "{vanished:?}");
            for instance in &gone {
                assert!(error.to_string().contains(&format!("{instance} (")), "{error}");
            }
            assert!(error.to_string().contains("(on-demand) lost"), "{error}");
        }
        let record = world.runs.record(&started.run_id).unwrap();
        assert_eq!(record.state, RunState::Lost);
        let markets: Vec<Market> = record.attempts.iter().map(|a| a.market).collect();
        assert_eq!(markets, [Market::Spot, Market::Spot, Market::OnDemand]);
        assert_eq!(world.notices.sent().len(), 1, "a lost run alerts once");
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_past_its_time_limit_is_terminated_and_timed_out() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap();
    tokio::time::advance(std::time::Duration::from_secs(181 * 60)).await;
    let error = world.runner.run(RunKind::Test, resume(&started.run_id, 0), &world.invocation("r2")).await.unwrap_err();
    assert_eq!(error.code(), "RunTimedOut");
    assert!(error.to_string().contains("time limit of 180 minutes"), "{error}");
    assert_eq!(world.instances.terminated(), vec![started.run.instance_id.unwrap()]);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_invocation_answers_running_after_wait_seconds() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Build, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap();
    let before = world.clock.now();
    let response =
        world.runner.run(RunKind::Build, resume(&started.run_id, 30), &world.invocation("r2")).await.unwrap();
    assert_eq!(response.status, "running");
    assert_eq!(world.clock.now().duration_since(before), SignedDuration::from_secs(30));
    // Without wait_seconds it waits until the deadline less the margin.
    let before = world.clock.now();
    let invocation = world.invocation("r3");
    let response = world
        .runner
        .run(RunKind::Build, RunRequest::Resume { run_id: started.run.run_id, wait_seconds: None }, &invocation)
        .await
        .unwrap();
    assert_eq!(response.status, "running");
    assert_eq!(world.clock.now().duration_since(before), SignedDuration::from_secs(15 * 60 - 15));
}

fn tried(world: &RunWorld) -> Vec<(String, Option<String>, String)> {
    world.instances.launches().into_iter().map(|l| (l.instance_type, l.subnet_id, l.client_token)).collect()
}

/// A type without capacity in a zone gives way to the profile's next type in that zone.
#[tokio::test(start_paused = true)]
async fn a_capacity_refusal_moves_on_to_the_next_instance_type() {
    let world = RunWorld::new(NOW);
    world.instances.no_capacity_for("m7g.2xlarge");
    let response = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap();
    let id = &response.run_id;
    assert_eq!(
        tried(&world),
        vec![
            ("m7g.2xlarge".into(), Some("subnet-a".into()), id.launch_token(1, 0)),
            ("m6g.2xlarge".into(), Some("subnet-a".into()), id.launch_token(1, 1)),
        ]
    );
    assert_eq!(response.state, RunState::Running);
}

/// A subnet that cannot take the instance gives way to the next subnet, and is not asked again
/// for the other types.
#[tokio::test(start_paused = true)]
async fn a_subnet_refusal_moves_on_to_the_next_subnet() {
    let world = RunWorld::new(NOW);
    world.instances.fill_subnet("subnet-a");
    world.instances.no_capacity_for("m7g.2xlarge");
    let response = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap();
    let id = &response.run_id;
    assert_eq!(
        tried(&world),
        vec![
            ("m7g.2xlarge".into(), Some("subnet-a".into()), id.launch_token(1, 0)),
            ("m7g.2xlarge".into(), Some("subnet-b".into()), id.launch_token(1, 1)),
            ("m6g.2xlarge".into(), Some("subnet-b".into()), id.launch_token(1, 2)),
        ]
    );
    assert_eq!(response.state, RunState::Running);
}

/// An account quota stops at once: no other type or subnet can do better.
#[tokio::test(start_paused = true)]
async fn a_quota_refusal_stops_at_once() {
    let world = RunWorld::new(NOW);
    world.instances.set_quota_reached(true);
    let error = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap_err();
    assert_eq!(error.code(), "CapacityUnavailable");
    assert!(error.to_string().contains("quota (VcpuLimitExceeded)"), "{error}");
    assert_eq!(world.instances.launches().len(), 1, "one launch asked: {:?}", tried(&world));
    world.instances.set_quota_reached(false);
    let next = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r2")).await.unwrap();
    assert_eq!(next.state, RunState::Running, "nothing is left active");
}

/// No spot capacity for any type in any subnet: the attempt falls back to on-demand.
#[tokio::test(start_paused = true)]
async fn no_spot_capacity_anywhere_falls_back_to_on_demand() {
    let world = RunWorld::new(NOW);
    let types =
        world.runner.catalog.profile_for(&ClusterName::parse("ci-1").unwrap()).unwrap().runner.instance_types.clone();
    types.iter().for_each(|t| world.instances.no_capacity_for(t));
    let started = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap();
    assert_eq!((started.state, started.attempts.len()), (RunState::Running, 1));
    assert_eq!(started.attempts[0].market, Market::OnDemand);
    let launches = world.instances.launches();
    assert_eq!(launches.len(), types.len() * 2 + 1, "every type in both subnets, then on demand");
    assert!(launches[..types.len() * 2].iter().all(|l| l.market == Market::Spot));
    assert_eq!(
        (launches.last().unwrap().market, &launches.last().unwrap().instance_type),
        (Market::OnDemand, &types[0])
    );
}

#[tokio::test(start_paused = true)]
async fn no_capacity_anywhere_in_any_attempt_is_capacity_unavailable_with_the_aws_code() {
    let world = RunWorld::new(NOW);
    let types =
        world.runner.catalog.profile_for(&ClusterName::parse("ci-1").unwrap()).unwrap().runner.instance_types.clone();
    types.iter().for_each(|t| world.instances.no_on_demand_capacity_for(t));
    let error = world
        .runner
        .run(RunKind::Test, start("ci-1", "main", FAULTED_START_WAIT), &world.invocation("r1"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "CapacityUnavailable");
    assert!(error.to_string().contains("InsufficientInstanceCapacity"), "{error}");
    assert!(error.to_string().contains("each of its 3 attempt(s)"), "{error}");
    // Two spot attempts, each falling back to on demand, then the on-demand last one.
    assert_eq!(world.instances.launches().len(), types.len() * 2 * 5, "every type in both subnets, per market");
    let run = world.runs.all().pop().unwrap();
    assert_eq!(run.state, RunState::CapacityUnavailable);
    assert!(run.attempts.iter().all(|a| a.outcome == AttemptOutcome::Capacity), "{:?}", run.attempts);
    let order: Vec<(String, Option<String>)> = tried(&world).into_iter().map(|(t, s, _)| (t, s)).collect();
    assert_eq!(
        order[..2],
        [(types[0].clone(), Some("subnet-a".into())), (types[1].clone(), Some("subnet-a".into()))],
        "zone by zone"
    );
    // Nothing is left active: the next start tries again.
    world.instances.capacity_back();
    let next = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r2")).await.unwrap();
    assert_eq!(next.state, RunState::Running);
}

#[tokio::test(start_paused = true)]
async fn bad_run_requests_launch_nothing() {
    let world = RunWorld::new(NOW);
    let unknown =
        world.runner.run(RunKind::Test, start("other", "main", 0), &world.invocation("r1")).await.unwrap_err();
    assert_eq!(unknown.code(), "UnknownCluster");
    let missing = RunId::parse("test-ci-1-20261123t120000-dead").unwrap();
    assert_eq!(
        world.runner.run(RunKind::Test, resume(&missing, 0), &world.invocation("r2")).await.unwrap_err().code(),
        "InvalidRequest"
    );
    assert_eq!(
        world.runner.run(RunKind::Build, resume(&missing, 0), &world.invocation("r3")).await.unwrap_err().code(),
        "InvalidRequest"
    );
    for version in ["release/4.x", "unstable", "latest"] {
        let untaggable =
            world.runner.run(RunKind::Build, start("ci-1", version, 0), &world.invocation("r4")).await.unwrap_err();
        assert_eq!(untaggable.code(), "InvalidRequest", "{version}");
        assert!(untaggable.to_string().contains(version), "{untaggable}");
    }
    assert!(world.instances.launches().is_empty());
    assert_eq!(world.runs.count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_build_of_main_pushes_under_the_unstable_tag_and_a_test_of_any_branch_runs() {
    let world = RunWorld::new(NOW);
    let build = world.runner.run(RunKind::Build, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap();
    assert_eq!(build.state, RunState::Running);
    let test = world.runner.run(RunKind::Test, start("ci-1", "release/4.x", 0), &world.invocation("r2")).await.unwrap();
    assert_eq!(test.state, RunState::Running);
    let launches = world.instances.launches();
    assert!(launches[0].user_data.script().contains("\nIMAGE_TAG='unstable'\n"));
    assert!(launches[1].user_data.script().contains("\nIMAGE_TAG=''\n"), "a test passes no tag it cannot name");
}

#[tokio::test(start_paused = true)]
async fn not_applicable_steps_neither_fail_nor_pass_a_run_and_say_why() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap();
    let names: Vec<String> = started.steps.iter().map(|s| s.name.clone()).collect();
    let reports: Vec<(&str, StepStatus)> = names
        .iter()
        .map(|n| (n.as_str(), if n == "manager-pytests" { StepStatus::NotApplicable } else { StepStatus::Passed }))
        .collect();
    world.runs.report(&started.run_id, &reports, Some("succeeded"));
    let done = world.runner.run(RunKind::Test, resume(&started.run_id, 0), &world.invocation("r2")).await.unwrap();
    assert_eq!(done.status, "success");
    assert_eq!(done.layout.as_deref(), Some("D"));
    let manager = done.steps.iter().find(|s| s.name == "manager-pytests").unwrap();
    assert_eq!(manager.status, StepStatus::NotApplicable);
    assert!(manager.reason.as_deref().is_some_and(|r| r.contains("manager")));
    let json = serde_json::to_value(&done).unwrap();
    assert_eq!(json["layout"], "D");
    assert_eq!(
        json["steps"].as_array().unwrap().iter().find(|s| s["name"] == "manager-pytests").unwrap()["status"],
        "not_applicable"
    );
}

// ---- Faults: a run never loses track of an instance ----

/// A launch that took effect but whose answer was lost (on every attempt too) is found and
/// adopted: the run keeps its one instance, and starting it again launches no second.
#[tokio::test(start_paused = true)]
async fn an_ambiguous_launch_that_did_launch_is_adopted_not_repeated() {
    for lost_answers in [1, 3] {
        let world = RunWorld::new(NOW);
        world.faults.script("RunInstances", Fault::LostAnswer, lost_answers);
        let started = world
            .runner
            .run(RunKind::Test, start("ci-1", "main", FAULTED_START_WAIT), &world.invocation("r1"))
            .await
            .unwrap();
        let instances = world.instances.instances();
        assert_eq!(instances.len(), 1, "{lost_answers} lost answers: {instances:?}");
        let instance_id = instances.keys().next().unwrap().clone();
        assert_eq!((started.state, started.instance_id.as_deref()), (RunState::Running, Some(instance_id.as_str())));
        let again = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r2")).await.unwrap();
        assert_eq!(again.run_id, started.run_id);
        assert_eq!(world.instances.instances().len(), 1, "no second instance");
    }
}

/// A launch that failed without an answer each time, and launched nothing, leaves the run
/// looking for its instance; when none appears, that attempt is lost and the next launches.
#[tokio::test(start_paused = true)]
async fn an_ambiguous_launch_that_launched_nothing_is_followed_by_the_next_attempt() {
    let world = RunWorld::new(NOW);
    world.faults.script("RunInstances", Fault::Reset, 3);
    let started = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap();
    assert_eq!((started.status, started.state, started.instance_id.as_deref()), ("running", RunState::Launching, None));
    let mut answer = started.clone();
    while answer.attempts.len() < 2 {
        answer = world.runner.run(RunKind::Test, resume(&started.run_id, 30), &world.invocation("r2")).await.unwrap();
    }
    let retried_after = world.clock.now().duration_since(NOW.parse::<Timestamp>().unwrap());
    assert!(retried_after <= crate::service::run::LAUNCH_GRACE + SignedDuration::from_secs(30), "{retried_after:?}");
    assert_eq!((answer.attempts[0].outcome, answer.attempts[0].instance_id.as_deref()), (AttemptOutcome::Lost, None));
    assert_eq!(answer.state, RunState::Running);
    assert_eq!(world.instances.instances().len(), 1, "one instance, of the second attempt");
    assert_eq!(answer.instance_id.as_deref(), world.instances.instances().keys().next().map(String::as_str));
}

/// The instance launched but its id could not be written to the record: the next invocation
/// finds it by its tag, records it, and ends the run with it.
#[tokio::test(start_paused = true)]
async fn an_instance_whose_record_update_failed_is_found_by_its_tag() {
    let world = RunWorld::new(NOW);
    // Every write this invocation tries: after the launch, and after finding it by tag in its wait.
    world.faults.script("UpdateRun", Fault::Throttled, 6);
    let started = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap();
    assert_eq!(started.status, "running");
    assert_eq!(world.instances.instances().len(), 1);
    assert_eq!(world.runs.record(&started.run_id).unwrap().instance_id, None, "the update failed");

    let resumed = world.runner.run(RunKind::Test, resume(&started.run_id, 30), &world.invocation("r2")).await.unwrap();
    let instance_id = world.instances.instances().keys().next().unwrap().clone();
    assert_eq!((resumed.state, resumed.instance_id.as_deref()), (RunState::Running, Some(instance_id.as_str())));
    assert_eq!(world.runs.record(&started.run_id).unwrap().instance_id.as_deref(), Some(instance_id.as_str()));

    world.runs.report(&started.run_id, &[], Some("failed"));
    let error =
        world.runner.run(RunKind::Test, resume(&started.run_id, 60), &world.invocation("r3")).await.unwrap_err();
    assert_eq!(error.code(), "TestsFailed");
    assert!(world.instances.instances().values().all(|i| !i.live()), "its instance is terminated");
}

/// A run recorded by a call whose answer was lost is launched once, not refused as a duplicate
/// of itself, whichever of the start's two writes lost its answer; its record stays.
#[tokio::test(start_paused = true)]
async fn a_run_recorded_without_an_answer_is_launched_once() {
    for write in ["PutRun", "PutActiveRun"] {
        let world = RunWorld::new(NOW);
        world.faults.script(write, Fault::LostAnswer, 1);
        let started = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap();
        assert_eq!(started.state, RunState::Running, "{write}");
        assert_eq!(world.instances.instances().len(), 1, "{write}");
        assert_eq!(world.runs.count(), 1, "{write}");
        assert!(world.runs.record(&started.run_id).is_some_and(|r| r.instance_id.is_some()), "{write}: recorded");
    }
}

/// An instance that comes up after its run ended (a launch whose answer came late) is terminated.
#[tokio::test(start_paused = true)]
async fn ending_a_run_terminates_every_instance_tagged_with_it() {
    let world = RunWorld::new(NOW);
    world.faults.script("RunInstances", Fault::Reset, 3);
    let started = world
        .runner
        .run(RunKind::Test, start("ci-1", "main", FAULTED_START_WAIT), &world.invocation("r1"))
        .await
        .unwrap();
    assert_eq!(started.instance_id, None);
    world.runs.report(&started.run_id, &[], Some("failed"));
    // Ends without an instance on record; one tagged with the run appears meanwhile.
    let mut spec = world.instances.launches()[0].clone();
    spec.client_token = "elsewhere".into();
    let late = world.instances.launch(&spec).await.unwrap();
    let error =
        world.runner.run(RunKind::Test, resume(&started.run_id, 60), &world.invocation("r2")).await.unwrap_err();
    assert_eq!(error.code(), "TestsFailed");
    assert!(!world.instances.instances()[&late].live(), "the late instance is terminated");
}

/// Cancel ends an active run at once: its instance terminated, its outcome `cancelled`, said by
/// whom; waiting on it again answers `RunCancelled`; cancelling again, or a run that had ended,
/// answers its outcome unchanged; an unknown run is `InvalidRequest`.
#[tokio::test(start_paused = true)]
async fn cancel_ends_an_active_run_and_leaves_an_ended_one_as_it_was() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &world.invocation("r1")).await.unwrap();
    let instance = started.instance_id.clone().unwrap();
    let cancel = |by: Option<&str>| crate::domain::CancelRequest {
        run_id: started.run_id.clone(),
        requested_by: by.map(|who| crate::domain::RequestedBy::parse(who).unwrap()),
    };
    let answer = world.runner.cancel(cancel(Some("dev@example.org"))).await.unwrap();
    assert_eq!((answer.outcome, answer.run_id.clone()), ("cancelled", started.run_id.clone()));
    assert!(answer.failure.as_deref().is_some_and(|f| f.contains("by dev@example.org")), "{answer:?}");
    assert!(world.instances.terminated().contains(&instance));
    assert_eq!(world.runs.record(&started.run_id).unwrap().state, RunState::Cancelled);

    let waited = world.runner.run(RunKind::Test, resume(&started.run_id, 0), &world.invocation("r2")).await;
    let error = waited.unwrap_err();
    assert_eq!(error.code(), "RunCancelled");
    assert!(error.to_string().contains("by dev@example.org"), "{error}");
    assert_eq!(world.runner.cancel(cancel(None)).await.unwrap().outcome, "cancelled", "cancelled again");

    let passed = world.runner.run(RunKind::Test, start("ci-2", "main", 0), &world.invocation("r3")).await.unwrap();
    world.runs.report(&passed.run_id, &[], Some("succeeded"));
    world.runner.run(RunKind::Test, resume(&passed.run_id, 0), &world.invocation("r4")).await.unwrap();
    let ended = crate::domain::CancelRequest { run_id: passed.run_id.clone(), requested_by: None };
    assert_eq!(world.runner.cancel(ended).await.unwrap().outcome, "succeeded", "an ended run as it ended");

    let unknown = crate::domain::CancelRequest {
        run_id: RunId::parse("test-ci-9-20261123t120000-ab12").unwrap(),
        requested_by: None,
    };
    assert_eq!(world.runner.cancel(unknown).await.unwrap_err().code(), "InvalidRequest");
}

#[test]
fn cancel_events_take_a_run_id_and_who_asks_and_nothing_else() {
    use crate::domain::CancelRequest;
    use serde_json::json;
    let run_id = "test-ci-1-20261123t120000-ab12";
    assert!(CancelRequest::parse(json!({"run_id": run_id})).is_ok());
    assert!(CancelRequest::parse(json!({"run_id": run_id, "requested_by": "octocat+ci@example.org"})).is_ok());
    for bad in [
        json!({}),
        json!({"run_id": "x; reboot"}),
        json!({"run_id": run_id, "force": true}),
        json!({"run_id": run_id, "requested_by": ""}),
        json!({"run_id": run_id, "requested_by": "a b"}),
        json!({"run_id": run_id, "requested_by": "x".repeat(65)}),
    ] {
        assert_eq!(CancelRequest::parse(bad.clone()).unwrap_err().code(), "InvalidRequest", "{bad}");
    }
}

// ---- The answer's bound ----

/// Throttled calls slow a start, not its answer: with `wait_seconds: 2` it answers `running` by
/// the least answer time, and the next asks carry the run on to its one instance.
#[tokio::test(start_paused = true)]
async fn a_start_whose_calls_are_throttled_answers_by_its_bound_and_the_run_goes_on() {
    let world = RunWorld::new(NOW);
    // Each throttled call takes the SDK's retries; the launch alone would take 23 s.
    world.faults.script("RunInstances", Fault::Throttled, 3);
    let asked = tokio::time::Instant::now();
    let started = world.runner.run(RunKind::Test, start("ci-1", "main", 2), &world.invocation("r1")).await.unwrap();
    let took = asked.elapsed();
    assert!(took <= crate::service::run::LEAST_ANSWER_TIME.unsigned_abs(), "answered after {took:?}");
    assert_eq!((started.status, started.state), ("running", RunState::Launching));
    let mut answer = started.clone();
    while answer.instance_id.is_none() {
        answer = world.runner.run(RunKind::Test, resume(&started.run_id, 30), &world.invocation("r2")).await.unwrap();
        let waited = world.clock.now().duration_since(NOW.parse::<Timestamp>().unwrap());
        assert!(waited <= crate::service::run::LAUNCH_GRACE + SignedDuration::from_mins(1), "{waited:?}");
    }
    assert_eq!(answer.state, RunState::Running);
    let live: Vec<_> = world.instances.instances().into_iter().filter(|(_, i)| i.live()).collect();
    assert_eq!(live.len(), 1, "one live instance: {live:?}");
}

/// An invocation near its end cannot record its run in time: it answers `Busy` saying nothing
/// runs, and nothing does.
#[tokio::test(start_paused = true)]
async fn a_start_cut_off_before_its_run_was_recorded_answers_busy_and_nothing_runs() {
    let world = RunWorld::new(NOW);
    world.faults.script("DescribeImages", Fault::Throttled, 1);
    let nearly_over = crate::service::Invocation {
        request_id: "r1".into(),
        deadline: world.clock.now()
            + SignedDuration::try_from(crate::service::DEADLINE_MARGIN).unwrap()
            + SignedDuration::from_secs(1),
    };
    let error = world.runner.run(RunKind::Test, start("ci-1", "main", 0), &nearly_over).await.unwrap_err();
    assert_eq!(error.code(), "Busy");
    assert!(error.to_string().contains("nothing runs for it"), "{error}");
    assert_eq!(world.runs.count(), 0);
    assert!(world.instances.launches().is_empty());
}
