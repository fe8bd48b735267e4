//! A profile's lifetimes and caps, and alerts, on fakes with paused time.

use crate::domain::{RunKind, RunRequest, ScheduleDestroyRequest, StepStatus};
use crate::ports::Clock;
use crate::testing::requests::{at, cluster, deploy, start, NOW};
use crate::testing::{Fault, RunWorld, StackBehaviour, World};

// Lifetimes.

#[tokio::test(start_paused = true)]
async fn a_deploy_that_creates_a_cluster_schedules_its_destroy_at_the_profile_default() {
    let world = World::new(NOW);
    let response = world.provisioner.deploy(deploy("ci-1"), &world.invocation("r1")).await.unwrap();
    // The ci profile's default is 240 minutes, counted from when the cluster runs: its create takes
    // 90 s, seen at the next 4-second poll.
    let expected = at("2026-11-23T16:01:32Z");
    assert_eq!(response.time_to_destroy.as_deref(), Some("2026-11-23T16:01:32Z"));
    let schedules = world.schedules.all();
    assert_eq!(schedules.len(), 1, "{schedules:?}");
    let (name, (when, input)) = schedules.into_iter().next().unwrap();
    assert_eq!((name.as_str(), when), ("destroy.ci-1.20261123T160132", expected));
    assert_eq!(input, r#"{"cluster":"ci-1"}"#, "the same event a manual destroy takes");
    assert!(serde_json::to_string(&response).unwrap().contains(r#""time_to_destroy":"2026-11-23T16:01:32Z""#));
}

#[tokio::test(start_paused = true)]
async fn a_deploy_of_a_running_cluster_schedules_nothing() {
    let world = World::new(NOW);
    world.stacks.seed("sliderule-cluster-ci-1", "CREATE_COMPLETE", None);
    let response = world.provisioner.deploy(deploy("ci-1"), &world.invocation("r1")).await.unwrap();
    assert_eq!(response.time_to_destroy, None);
    assert!(world.schedules.all().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_default_schedule_that_cannot_be_made_is_a_note_and_the_deploy_succeeds() {
    let world = World::new(NOW);
    world.faults.script("CreateSchedule", Fault::Throttled, 1);
    let response = world.provisioner.deploy(deploy("developers"), &world.invocation("r1")).await.unwrap();
    assert_eq!((response.status, response.time_to_destroy), ("success", None));
    let note = response.note.unwrap();
    assert!(note.contains("could not be scheduled") && note.contains("sweeper"), "{note}");
}

#[tokio::test(start_paused = true)]
async fn schedule_destroy_beyond_the_profile_maximum_is_refused_naming_the_limit() {
    let world = World::new(NOW);
    let request = |time: &str| ScheduleDestroyRequest {
        cluster: cluster("developers"),
        time_to_destroy: at(time),
        requested_by: None,
    };
    let error =
        world.provisioner.schedule_destroy(request("2026-11-24T00:00:01Z"), &world.invocation("r1")).await.unwrap_err();
    assert_eq!(error.code(), "InvalidRequest");
    let text = error.to_string();
    assert!(text.contains("maximum lifetime of 720 minutes") && text.contains("2026-11-24T00:00:00Z"), "{text}");
    assert!(world.schedules.all().is_empty(), "nothing was scheduled");
    // At the limit it is taken.
    world.provisioner.schedule_destroy(request("2026-11-24T00:00:00Z"), &world.invocation("r2")).await.unwrap();
}

// Alerts.

#[tokio::test(start_paused = true)]
async fn a_failed_deploy_alerts_and_a_callers_mistake_does_not() {
    let world = World::new(NOW);
    world.stacks.set_behaviour(StackBehaviour { create_ends_in: "ROLLBACK_COMPLETE", ..Default::default() });
    let error = world.provisioner.deploy(deploy("ci-1"), &world.invocation("r1")).await.unwrap_err();
    assert_eq!(error.code(), "DeployFailed");
    let unknown = world.provisioner.deploy(deploy("nobody"), &world.invocation("r2")).await.unwrap_err();
    assert_eq!(unknown.code(), "UnknownCluster");
    let sent = world.notices.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, "SlideRule provisioner: deploy of ci-1 failed (DeployFailed)");
    assert_eq!(sent[0].1, error.to_string());
}

#[tokio::test(start_paused = true)]
async fn an_alert_that_cannot_be_sent_changes_no_outcome() {
    let world = World::new(NOW);
    world.stacks.set_behaviour(StackBehaviour { create_ends_in: "ROLLBACK_COMPLETE", ..Default::default() });
    world.faults.script("Publish", Fault::ServerError, 1);
    let error = world.provisioner.deploy(deploy("ci-1"), &world.invocation("r1")).await.unwrap_err();
    assert_eq!(error.code(), "DeployFailed");
}

#[tokio::test(start_paused = true)]
async fn a_run_with_failed_steps_alerts_once_and_a_passed_run_not_at_all() {
    let world = RunWorld::new(NOW);
    let failing = world.runner.run(RunKind::Test, start("ci-1", "main"), &world.invocation("r1")).await.unwrap();
    let passing = world.runner.run(RunKind::Test, start("ci-2", "main"), &world.invocation("r2")).await.unwrap();
    world.runs.report(
        &failing.run_id,
        &[("checkout", StepStatus::Passed), ("debug-build", StepStatus::Failed)],
        Some("failed"),
    );
    world.runs.report(&passing.run_id, &[("checkout", StepStatus::Passed)], Some("succeeded"));
    for (run_id, request) in [(&failing.run_id, "r3"), (&failing.run_id, "r4"), (&passing.run_id, "r5")] {
        let resume = RunRequest::Resume { run_id: run_id.clone(), wait_seconds: Some(0) };
        let _ = world.runner.run(RunKind::Test, resume, &world.invocation(request)).await;
    }
    let sent = world.notices.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, "SlideRule provisioner: test run of main on ci-1 failed");
    assert!(sent[0].1.contains("steps failed: debug-build"), "{}", sent[0].1);
}

// Caps on concurrent runs.

/// Ten starts at the same moment, each yielding between its calls as real ones do, against the
/// ci profile's cap of six TEST runs: six runs and six instances at most, the rest `Busy`.
#[tokio::test(start_paused = true)]
async fn ten_starts_at_once_against_a_cap_of_six_give_six_runs_and_the_rest_busy() {
    let world = RunWorld::new(NOW);
    let names: Vec<String> = (1..=10).map(|n| format!("ci-{n}")).collect();
    let starts = names.iter().enumerate().map(|(index, name)| {
        let invocation = world.invocation(&format!("r{index}"));
        let runner = world.runner.clone();
        async move { runner.run(RunKind::Test, start(name, "main"), &invocation).await }
    });
    let answers = futures::future::join_all(starts).await;
    let started = answers.iter().filter(|answer| answer.is_ok()).count();
    let busy: Vec<_> = answers.iter().filter_map(|answer| answer.as_ref().err()).collect();
    assert!(busy.iter().all(|error| error.code() == "Busy"), "{busy:?}");
    assert_eq!((started, busy.len()), (6, 4), "{answers:?}");
    let live = world.instances.instances().values().filter(|instance| instance.live()).count();
    assert_eq!(live, 6, "never more instances than the cap");
    let active = world.runs.all().into_iter().filter(|run| !run.state.ended()).count();
    assert_eq!(active, 6, "never more runs than the cap");
}

/// A start that crashed after taking its slot leaks it: nobody frees it while its start may still
/// write its record, the sweeper frees it after the lease, and the next start takes it.
#[tokio::test(start_paused = true)]
async fn a_leaked_slot_is_held_through_its_lease_and_reclaimed_by_the_next_sweep() {
    let ops = crate::testing::OpsWorld::new(NOW);
    let world = &ops.runs;
    for (index, name) in ["ci-a", "ci-b"].into_iter().enumerate() {
        world.runner.run(RunKind::Build, start(name, "v5.1.0"), &world.invocation(&format!("r{index}"))).await.unwrap();
    }
    // The third slot, taken by a start that never wrote its record.
    let crashed = crate::domain::RunId::new(RunKind::Build, &cluster("ci-x"), world.clock.now());
    let slots = crate::ports::Slots { profile: "ci".into(), kind: RunKind::Build, cap: 3 };
    let deadline = world.clock.now() + jiff::SignedDuration::from_hours(9);
    let taken = crate::ports::Runs::take_slot(&*world.runs, &slots, &crashed, deadline, world.clock.now()).await;
    assert_eq!(taken.unwrap(), None);
    let error = world.runner.run(RunKind::Build, start("ci-c", "v5.1.0"), &world.invocation("r3")).await.unwrap_err();
    assert_eq!(error.code(), "Busy", "within its lease the slot may still be its start's");
    tokio::time::advance(std::time::Duration::from_secs(4 * 60)).await;
    let swept = ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap();
    let freed: Vec<_> =
        swept.actions.iter().filter(|a| a.finding.action == super::sweeper::SweepAction::FreeSlot).collect();
    assert_eq!(freed.len(), 1, "{:?}", swept.actions);
    assert_eq!(freed[0].finding.target.as_str(), crashed.as_str());
    assert!(freed[0].finding.reason.contains("no record"), "{:?}", freed[0]);
    world.runner.run(RunKind::Build, start("ci-c", "v5.1.0"), &world.invocation("r4")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_start_beyond_the_profile_cap_is_busy_naming_the_active_runs() {
    let world = RunWorld::new(NOW);
    // The ci profile allows 3 concurrent builds.
    let mut active = Vec::new();
    for (index, name) in ["ci-a", "ci-b", "ci-c"].into_iter().enumerate() {
        let request = world.invocation(&format!("r{index}"));
        active.push(world.runner.run(RunKind::Build, start(name, "v5.1.0"), &request).await.unwrap().run.run_id);
    }
    let error = world.runner.run(RunKind::Build, start("ci-d", "v5.1.0"), &world.invocation("r3")).await.unwrap_err();
    assert_eq!(error.code(), "Busy");
    let text = error.to_string();
    assert!(active.iter().all(|run_id| text.contains(run_id.as_str())), "{text}");
    assert!(text.contains("'ci' profile allows 3 concurrent build run(s)"), "{text}");
    assert_eq!(world.instances.launches().len(), 3, "nothing launched for the refused start");

    // Starting an active run again answers with it; another kind or profile has its own cap.
    let again = world.runner.run(RunKind::Build, start("ci-a", "v5.1.0"), &world.invocation("r4")).await.unwrap();
    assert_eq!(again.run_id, active[0]);
    world.runner.run(RunKind::Test, start("ci-d", "v5.1.0"), &world.invocation("r5")).await.unwrap();
    world.runner.run(RunKind::Build, start("developers", "v5.1.0"), &world.invocation("r6")).await.unwrap();

    // Once a run ends, the next starts.
    world.runs.report(&active[0], &[], Some("succeeded"));
    let resume = RunRequest::Resume { run_id: active[0].clone(), wait_seconds: Some(0) };
    world.runner.run(RunKind::Build, resume, &world.invocation("r7")).await.unwrap();
    world.runner.run(RunKind::Build, start("ci-d", "v5.1.0"), &world.invocation("r8")).await.unwrap();
}
