//! A run's attempts on fakes with paused time: what follows each way the cloud ends one, EC2's
//! events (and the same event twice), the boot deadline, a failed step, holds and cancels.

use std::time::Duration;

use serde_json::json;

use super::progress::EventAction;
use crate::domain::{AttemptOutcome, InstanceEvent, Market, RunId, RunKind, RunRequest, RunState, StepStatus};
use crate::ports::{Clock, InstanceState};
use crate::testing::requests::{cluster, NOW};
use crate::testing::{OpsWorld, RunWorld};

fn start_held(hold_minutes: u32) -> RunRequest {
    RunRequest::Start {
        cluster: cluster("ci-1"),
        version: crate::domain::GitRef::parse("main").unwrap(),
        wait_seconds: Some(0),
        hold_minutes,
        requested_by: None,
    }
}

fn resume(run_id: &RunId) -> RunRequest {
    RunRequest::Resume { run_id: run_id.clone(), wait_seconds: Some(0) }
}

fn warning(instance_id: &str) -> InstanceEvent {
    event("EC2 Spot Instance Interruption Warning", json!({"instance-id": instance_id, "instance-action": "terminate"}))
}

fn state_change(instance_id: &str, state: &str) -> InstanceEvent {
    event("EC2 Instance State-change Notification", json!({"instance-id": instance_id, "state": state}))
}

fn event(detail_type: &str, detail: serde_json::Value) -> InstanceEvent {
    InstanceEvent::parse(json!({
        "version": "0", "id": "5e1c0f2a-0000-4000-8000-000000000001", "detail-type": detail_type,
        "source": "aws.ec2", "account": "123456789012", "time": NOW, "region": "us-west-2",
        "resources": [], "detail": detail
    }))
    .unwrap()
}

async fn pass(minutes: u64) {
    tokio::time::advance(Duration::from_secs(minutes * 60)).await;
}

/// Every step of the plan reported, the first `failing` of them failed.
fn report_all(world: &RunWorld, run_id: &RunId, failing: usize) {
    let names: Vec<String> = world.runs.record(run_id).unwrap().steps.iter().map(|s| s.name.clone()).collect();
    let steps: Vec<(&str, StepStatus)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), if i < failing { StepStatus::Failed } else { StepStatus::Passed }))
        .collect();
    world.runs.report(run_id, &steps, Some(if failing > 0 { "failed" } else { "succeeded" }));
}

#[tokio::test(start_paused = true)]
async fn interruption_warnings_begin_the_next_attempt_until_none_is_left_then_the_run_is_lost() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start_held(0), &world.invocation("r1")).await.unwrap();
    let mut instances = vec![started.instance_id.clone().unwrap()];
    for attempt in 1..=3 {
        let current = instances.last().unwrap().clone();
        let answer = world.runner.instance_event(warning(&current)).await.unwrap();
        let record = world.runs.record(&started.run_id).unwrap();
        assert_eq!(answer.run_id.as_ref(), Some(&started.run_id));
        assert!(world.instances.terminated().contains(&current), "the interrupted instance goes first");
        assert_eq!(record.attempts[attempt - 1].outcome, AttemptOutcome::Interrupted);
        assert!(record.attempts[attempt - 1].ended_at.is_some());
        if attempt < 3 {
            assert_eq!(answer.action, EventAction::Retried);
            let next = record.instance_id.clone().unwrap();
            assert_ne!(next, current);
            assert_eq!((record.state, record.attempts.len()), (RunState::Running, attempt + 1));
            let live: Vec<_> = world.instances.instances().into_iter().filter(|(_, i)| i.live()).collect();
            assert_eq!(live.len(), 1, "never two live instances for one run");
            instances.push(next);
        } else {
            assert_eq!((answer.action, record.state), (EventAction::Recorded, RunState::Lost));
        }
    }
    let record = world.runs.record(&started.run_id).unwrap();
    let markets: Vec<Market> = record.attempts.iter().map(|a| a.market).collect();
    assert_eq!(markets, [Market::Spot, Market::Spot, Market::OnDemand], "the last attempt runs on demand");
    let launched: Vec<Market> = world.instances.launches().iter().map(|l| l.market).collect();
    assert_eq!(launched, markets);
    let error = world.runner.run(RunKind::Test, resume(&started.run_id), &world.invocation("r2")).await.unwrap_err();
    assert_eq!(error.code(), "RunLost");
    for (number, instance) in instances.iter().enumerate() {
        assert!(error.to_string().contains(&format!("attempt {}: {instance} (", number + 1)), "{error}");
    }
    let alerts = world.notices.sent();
    assert_eq!(alerts.len(), 1, "a lost run alerts once: {alerts:?}");
    assert!(instances.iter().all(|instance| alerts[0].1.contains(instance.as_str())), "{alerts:?}");
}

#[tokio::test(start_paused = true)]
async fn the_same_event_delivered_twice_changes_nothing_more() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start_held(0), &world.invocation("r1")).await.unwrap();
    let instance = started.run.instance_id.clone().unwrap();
    let first = world.runner.instance_event(warning(&instance)).await.unwrap();
    assert_eq!(first.action, EventAction::Retried);
    // Redelivered, and the state changes the termination itself brings.
    for again in [warning(&instance), state_change(&instance, "shutting-down"), state_change(&instance, "terminated")] {
        let answer = world.runner.instance_event(again).await.unwrap();
        assert_eq!(answer.action, EventAction::Ignored, "{}", answer.reason);
    }
    assert_eq!(world.instances.launches().len(), 2, "one retry for the one interruption");
    assert_eq!(world.runs.record(&started.run_id).unwrap().attempts.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn events_that_end_no_current_attempt_are_ignored() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start_held(0), &world.invocation("r1")).await.unwrap();
    let instance = started.run.instance_id.clone().unwrap();
    for state in ["pending", "running"] {
        let answer = world.runner.instance_event(state_change(&instance, state)).await.unwrap();
        assert_eq!(answer.action, EventAction::Ignored, "{state}");
    }
    world.instances.put("i-0000000000000abc", "m7g.large", &[]);
    for unknown in ["i-0000000000000abc", "i-0000000000000dead"] {
        let answer = world.runner.instance_event(warning(unknown)).await.unwrap();
        assert_eq!((answer.action, answer.run_id), (EventAction::Ignored, None), "{unknown}");
    }
    report_all(&world, &started.run_id, 0);
    world.runner.run(RunKind::Test, resume(&started.run_id), &world.invocation("r2")).await.unwrap();
    let ended = world.runner.instance_event(state_change(&instance, "terminated")).await.unwrap();
    assert_eq!(ended.action, EventAction::Ignored, "the run ended: {}", ended.reason);
    assert_eq!(world.instances.launches().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_step_is_never_retried() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start_held(0), &world.invocation("r1")).await.unwrap();
    report_all(&world, &started.run_id, 2);
    // The instance powers off after reporting; its going is no reason to try again.
    let instance = started.run.instance_id.clone().unwrap();
    world.instances.set_state(&instance, Some(InstanceState::ShuttingDown));
    let answer = world.runner.instance_event(state_change(&instance, "shutting-down")).await.unwrap();
    assert_eq!(answer.action, EventAction::Recorded, "{}", answer.reason);
    let record = world.runs.record(&started.run_id).unwrap();
    assert_eq!((record.state, record.attempts.len()), (RunState::Failed, 1));
    assert_eq!(record.attempts[0].outcome, AttemptOutcome::Completed);
    let error = world.runner.run(RunKind::Test, resume(&started.run_id), &world.invocation("r2")).await.unwrap_err();
    assert_eq!(error.code(), "TestsFailed");
    assert_eq!(world.instances.launches().len(), 1, "no second instance");
}

#[tokio::test(start_paused = true)]
async fn the_instances_own_interruption_report_begins_the_next_attempt_from_a_clean_start() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start_held(0), &world.invocation("r1")).await.unwrap();
    let names: Vec<String> = started.steps.iter().map(|s| s.name.clone()).collect();
    world.runs.report(&started.run_id, &[(&names[0], StepStatus::Passed), (&names[1], StepStatus::Running)], None);
    world.runs.report_interrupted(&started.run_id);
    let answer = world.runner.run(RunKind::Test, resume(&started.run_id), &world.invocation("r2")).await.unwrap();
    assert_eq!(answer.attempts.len(), 2);
    let first = &answer.attempts[0];
    assert_eq!((first.outcome, first.step.as_deref()), (AttemptOutcome::Interrupted, Some(names[1].as_str())));
    assert!(answer.steps.iter().all(|s| s.status == StepStatus::Pending), "a clean start: {:?}", answer.steps);
    assert_eq!(answer.commit, None);
    let second = &answer.attempts[1];
    // Each attempt logs under its own instance's caller id, the one prefix its role may write.
    let instance = second.instance_id.as_deref().expect("the second attempt has its instance");
    assert_eq!(second.log_location, format!("s3://sliderule-provisioner-runs/runs/AROATESTRUNNER:{instance}/"));
    assert_eq!(answer.log_location, second.log_location, "the run's logs are its current attempt's");
    let first_instance = first.instance_id.as_deref().unwrap();
    assert_eq!(first.log_location, format!("s3://sliderule-provisioner-runs/runs/AROATESTRUNNER:{first_instance}/"));
    let script = world.instances.launches()[1].user_data.script();
    assert!(script.contains("ATTEMPT='2'") && script.contains("LOG_BUCKET='sliderule-provisioner-runs'"));
    let tags: std::collections::BTreeMap<_, _> = world.instances.launches()[1].tags.iter().cloned().collect();
    assert_eq!(tags["sliderule:attempt"], "2");
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_never_checks_in_is_replaced_after_the_boot_timeout() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start_held(0), &world.invocation("r1")).await.unwrap();
    pass(9).await;
    let waiting = world.runner.run(RunKind::Test, resume(&started.run_id), &world.invocation("r2")).await.unwrap();
    assert_eq!(waiting.attempts.len(), 1, "within its 10 minutes");
    pass(2).await;
    let answer = world.runner.run(RunKind::Test, resume(&started.run_id), &world.invocation("r3")).await.unwrap();
    assert_eq!((answer.attempts.len(), answer.attempts[0].outcome), (2, AttemptOutcome::BootTimeout));
    assert!(world.instances.terminated().contains(&started.run.instance_id.unwrap()));

    // One that checked in is not.
    world.runs.report(&answer.run_id, &[], None);
    pass(30).await;
    let later = world.runner.run(RunKind::Test, resume(&answer.run_id), &world.invocation("r4")).await.unwrap();
    assert_eq!(later.attempts.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_applies_the_boot_timeout_to_a_run_nobody_waits_on() {
    let ops = OpsWorld::new(NOW);
    let world = &ops.runs;
    let started = world.runner.run(RunKind::Test, start_held(0), &ops.world.invocation("r1")).await.unwrap();
    pass(11).await;
    let swept = ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap();
    let action = swept.actions.iter().find(|a| a.finding.target.as_str() == started.run_id.as_str()).unwrap();
    assert!(action.finding.reason.contains("did not check in"), "{}", action.finding.reason);
    assert!(action.result.starts_with("began attempt 2 on "), "{}", action.result);
    let record = world.runs.record(&started.run_id).unwrap();
    assert_eq!(record.attempts[0].outcome, AttemptOutcome::BootTimeout);
}

#[tokio::test(start_paused = true)]
async fn a_failed_run_with_a_hold_keeps_its_instance_until_the_hold_ends() {
    let ops = OpsWorld::new(NOW);
    let world = &ops.runs;
    let started = world.runner.run(RunKind::Test, start_held(30), &ops.world.invocation("r1")).await.unwrap();
    let instance = started.instance_id.clone().unwrap();
    let launch = &world.instances.launches()[0];
    assert!(launch.user_data.script().contains("\nshutdown -h +210\n"), "its time limit plus the hold");
    let tags: std::collections::BTreeMap<_, _> = launch.tags.iter().cloned().collect();
    assert_eq!(tags["sliderule:expires-at"], "2026-11-23T15:30:00Z");

    report_all(world, &started.run_id, 1);
    let error =
        world.runner.run(RunKind::Test, resume(&started.run_id), &ops.world.invocation("r2")).await.unwrap_err();
    assert_eq!(error.code(), "TestsFailed");
    assert!(error.to_string().contains(&format!("aws ssm start-session --target {instance}")), "{error}");
    assert!(!world.instances.terminated().contains(&instance), "held");
    let record = world.runs.record(&started.run_id).unwrap();
    assert_eq!(record.held_until, Some(world.clock.now() + jiff::SignedDuration::from_mins(30)));

    pass(20).await;
    let swept = ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap();
    assert!(swept.actions.iter().all(|a| a.finding.target.as_str() != instance), "{:?}", swept.actions);
    let status = ops.operations.status().await.unwrap();
    let held = status.held.iter().find(|h| h.instance_id == instance).expect("status lists the held instance");
    assert!(held.connect.contains(&instance));

    pass(11).await;
    let swept = ops.operations.sweep(&ops.world.invocation("s2")).await.unwrap();
    let ended = swept.actions.iter().find(|a| a.finding.target.as_str() == instance).expect("its hold ended");
    assert!(ended.finding.reason.contains("hold ended"), "{}", ended.finding.reason);
    assert!(world.instances.terminated().contains(&instance));
}

#[tokio::test(start_paused = true)]
async fn a_passing_run_is_never_held() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start_held(30), &world.invocation("r1")).await.unwrap();
    report_all(&world, &started.run_id, 0);
    let done = world.runner.run(RunKind::Test, resume(&started.run_id), &world.invocation("r2")).await.unwrap();
    assert_eq!((done.status, done.held_until), ("success", None));
    assert_eq!(world.instances.terminated(), vec![started.run.instance_id.unwrap()]);
}

#[tokio::test(start_paused = true)]
async fn cancel_ends_a_hold_at_once_and_answers_the_outcome_unchanged() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start_held(60), &world.invocation("r1")).await.unwrap();
    report_all(&world, &started.run_id, 1);
    world.runner.run(RunKind::Test, resume(&started.run_id), &world.invocation("r2")).await.unwrap_err();
    let instance = started.run.instance_id.clone().unwrap();
    assert!(!world.instances.terminated().contains(&instance));
    let request = crate::domain::CancelRequest { run_id: started.run_id.clone(), requested_by: None };
    let cancelled = world.runner.cancel(request).await.unwrap();
    assert_eq!(cancelled.outcome, "failed");
    assert!(world.instances.terminated().contains(&instance), "the hold ended");
    assert_eq!(world.runs.record(&started.run_id).unwrap().held_until, Some(world.clock.now()));
}

#[tokio::test(start_paused = true)]
async fn cancel_during_a_later_attempt_terminates_that_attempts_instance() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start_held(0), &world.invocation("r1")).await.unwrap();
    world.runner.instance_event(warning(started.instance_id.as_deref().unwrap())).await.unwrap();
    let second = world.runs.record(&started.run_id).unwrap().instance_id.unwrap();
    let request = crate::domain::CancelRequest { run_id: started.run_id.clone(), requested_by: None };
    let cancelled = world.runner.cancel(request).await.unwrap();
    assert_eq!(cancelled.outcome, "cancelled");
    assert!(world.instances.terminated().contains(&second));
    let outcomes: Vec<AttemptOutcome> = cancelled.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [AttemptOutcome::Interrupted, AttemptOutcome::Cancelled]);
    let late = world.runner.instance_event(state_change(&second, "terminated")).await.unwrap();
    assert_eq!(late.action, EventAction::Ignored);
}

/// A hung run: its deadman shuts the instance down at the time limit and EC2 says so. The run ends
/// `RunTimedOut` naming the limit and the step, its one attempt `timed_out`: never retried.
#[tokio::test(start_paused = true)]
async fn a_run_that_reaches_its_time_limit_ends_timed_out_and_is_never_retried() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start_held(0), &world.invocation("r1")).await.unwrap();
    let (run_id, instance) = (started.run_id.clone(), started.instance_id.clone().unwrap());
    let names: Vec<String> = world.runs.record(&run_id).unwrap().steps.iter().map(|s| s.name.clone()).collect();
    world.runs.report(
        &run_id,
        &[(names[0].as_str(), StepStatus::Passed), (names[1].as_str(), StepStatus::Running)],
        None,
    );
    pass(180).await;
    // The deadman: the exit trap says so, then EC2's state changes follow.
    world.runs.report_timed_out(&run_id);
    world.instances.set_state(&instance, Some(InstanceState::ShuttingDown));
    let answer = world.runner.instance_event(state_change(&instance, "shutting-down")).await.unwrap();
    assert_eq!(answer.action, EventAction::Recorded, "{answer:?}");
    let record = world.runs.record(&run_id).unwrap();
    assert_eq!(record.state, RunState::TimedOut);
    assert_eq!(record.attempts.len(), 1, "never retried: {:?}", record.attempts);
    assert_eq!(record.attempts[0].outcome, AttemptOutcome::TimedOut);
    assert_eq!(record.attempts[0].step.as_deref(), Some(names[1].as_str()));
    assert_eq!(world.instances.launches().len(), 1, "no second instance");
    let again = world.runner.instance_event(state_change(&instance, "terminated")).await.unwrap();
    assert_eq!(again.action, EventAction::Ignored, "the run ended: {again:?}");
    let error = world.runner.run(RunKind::Test, resume(&run_id), &world.invocation("r2")).await.unwrap_err();
    assert_eq!(error.code(), "RunTimedOut");
    let text = error.to_string();
    assert!(text.contains("time limit of 180 minutes") && text.contains(&format!("in step {}", names[1])), "{text}");
    let alerts = world.notices.sent();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0].0.contains("RunTimedOut"), "{alerts:?}");
}

/// The deadman's own signal is the time limit, not a spot interruption, even before the limit
/// the function counts: the instance said so.
#[tokio::test(start_paused = true)]
async fn an_instance_that_says_its_deadman_fired_ends_its_run_timed_out() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start_held(0), &world.invocation("r1")).await.unwrap();
    world.runs.report(&started.run_id, &[], None);
    pass(10).await;
    world.runs.report_timed_out(&started.run_id);
    let error = world.runner.run(RunKind::Test, resume(&started.run_id), &world.invocation("r2")).await.unwrap_err();
    assert_eq!(error.code(), "RunTimedOut", "{error}");
    assert!(error.to_string().contains("outside any step"), "{error}");
    assert_eq!(world.instances.launches().len(), 1);
}

/// Whichever sees the limit first, the sweep (terminating the expired instance, resuming the run)
/// or EC2's event after it, the run ends timed out once and launches nothing more.
#[tokio::test(start_paused = true)]
async fn a_sweep_past_the_time_limit_ends_the_run_timed_out_and_the_later_event_changes_nothing() {
    let ops = OpsWorld::new(NOW);
    let world = &ops.runs;
    let started = world.runner.run(RunKind::Build, start_held(0), &world.invocation("r1")).await.unwrap();
    let instance = started.instance_id.clone().unwrap();
    world.runs.report(&started.run_id, &[], None);
    pass(181).await;
    let swept = ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap();
    assert!(swept.actions.iter().all(|a| a.ok), "{:?}", swept.actions);
    assert!(world.instances.terminated().contains(&instance));
    let record = world.runs.record(&started.run_id).unwrap();
    assert_eq!((record.state, record.attempts.len()), (RunState::TimedOut, 1), "{:?}", record.attempts);
    let answer = world.runner.instance_event(state_change(&instance, "terminated")).await.unwrap();
    assert_eq!(answer.action, EventAction::Ignored);
    assert_eq!(world.instances.launches().len(), 1);
    assert!(ops.operations.sweep(&ops.world.invocation("s2")).await.unwrap().actions.is_empty());
}

/// The answer to the write that begins the next attempt is lost, and the SDK's retry of it fails
/// its condition (met by that very write), or the answer is lost outright: the write is
/// recognised as ours, and the next attempt launches at once rather than waiting to be lost.
#[tokio::test(start_paused = true)]
async fn a_lost_answer_to_the_write_that_begins_an_attempt_still_launches_it() {
    for fault in [crate::testing::Fault::RetryMeetsOwnWrite, crate::testing::Fault::LostAnswer] {
        let world = RunWorld::new(NOW);
        let started = world.runner.run(RunKind::Test, start_held(0), &world.invocation("r1")).await.unwrap();
        let first = started.instance_id.clone().unwrap();
        world.faults.script("BeginAttempt", fault, 1);
        let answer = world.runner.instance_event(warning(&first)).await.unwrap();
        assert_eq!(answer.action, EventAction::Retried, "{fault:?}: {answer:?}");
        let record = world.runs.record(&started.run_id).unwrap();
        assert_eq!(record.attempts.len(), 2, "{fault:?}");
        let second = record.instance_id.clone().expect("the next attempt launched at once");
        assert_ne!(second, first);
        assert_eq!(world.instances.launches().len(), 2, "{fault:?}");
    }
}

/// The answer to the write that ends a run is lost: the run still alerts, once, as ended by us.
#[tokio::test(start_paused = true)]
async fn a_lost_answer_to_the_write_that_ends_a_run_still_alerts_once() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start_held(0), &world.invocation("r1")).await.unwrap();
    report_all(&world, &started.run_id, 1);
    world.faults.script("UpdateRun", crate::testing::Fault::LostAnswer, 1);
    let error = world.runner.run(RunKind::Test, resume(&started.run_id), &world.invocation("r2")).await.unwrap_err();
    assert_eq!(error.code(), "TestsFailed", "{error}");
    world.runner.run(RunKind::Test, resume(&started.run_id), &world.invocation("r3")).await.unwrap_err();
    assert_eq!(world.notices.sent().len(), 1, "{:?}", world.notices.sent());
}
