//! Per-test results on fakes with paused time: three TEST runs of one version, the first and
//! second failing one test and the third none, answer `new`, then `still_failing` since the first,
//! then `fixed`; the alerts lead with what is new, and a run with no new failure alerts in one line.

use crate::domain::test_results::{FailureChange, StepTests, TestCounts};
use crate::domain::{ClusterName, GitRef, RunId, RunKind, RunRequest, StepStatus};
use crate::testing::RunWorld;

const NOW: &str = "2026-11-23T12:00:00Z";
const STEP: &str = "python-client-pytests";
const TEST: &str = "tests/test_atl03.py::test_nominal";

fn start() -> RunRequest {
    RunRequest::Start {
        cluster: ClusterName::parse("ci-1").unwrap(),
        version: GitRef::parse("main").unwrap(),
        wait_seconds: Some(0),
        hold_minutes: 0,
        requested_by: None,
    }
}

/// Runs one TEST run to its end: every step passed but `STEP`, whose suite fails `failing`.
async fn run_failing(world: &RunWorld, failing: &[&str]) -> (RunId, Result<(), String>) {
    let started = world.runner.run(RunKind::Test, start(), &world.invocation("start")).await.unwrap();
    let suite = StepTests {
        counts: TestCounts { passed: 40, failed: failing.len() as u32, skipped: 2 },
        failing: failing.iter().map(|id| (*id).to_owned()).collect(),
    };
    world.runs.report_tests(&started.run_id, STEP, suite);
    let status = if failing.is_empty() { StepStatus::Passed } else { StepStatus::Failed };
    let steps: Vec<(String, StepStatus)> = started
        .steps
        .iter()
        .map(|step| (step.name.clone(), if step.name == STEP { status } else { StepStatus::Passed }))
        .collect();
    let steps: Vec<(&str, StepStatus)> = steps.iter().map(|(name, status)| (name.as_str(), *status)).collect();
    world.runs.report(&started.run_id, &steps, Some(if failing.is_empty() { "succeeded" } else { "failed" }));
    tokio::time::advance(std::time::Duration::from_secs(60)).await;
    let resume = RunRequest::Resume { run_id: started.run_id.clone(), wait_seconds: Some(0) };
    let answer = world.runner.run(RunKind::Test, resume, &world.invocation("resume")).await;
    (started.run_id.clone(), answer.map(|_| ()).map_err(|error| error.to_string()))
}

#[tokio::test(start_paused = true)]
async fn a_failure_is_new_then_still_failing_since_its_first_run_then_fixed() {
    let world = RunWorld::new(NOW);
    let (first, answer) = run_failing(&world, &[TEST]).await;
    let message = answer.unwrap_err();
    assert!(message.contains(&format!("1 new failure(s): {TEST}")), "{message}");
    let tests = world.runs.record(&first).unwrap().tests.unwrap();
    assert_eq!((tests.compared_with, tests.new.clone()), (None, vec![TEST.to_owned()]));
    assert_eq!(tests.counts, TestCounts { passed: 40, failed: 1, skipped: 2 });
    assert_eq!((tests.failed[0].step.as_str(), tests.failed[0].status), (STEP, FailureChange::New));

    let (second, answer) = run_failing(&world, &[TEST]).await;
    assert!(answer.unwrap_err().contains(&format!("1 still failing (the oldest since {first})")));
    let tests = world.runs.record(&second).unwrap().tests.unwrap();
    assert_eq!(tests.compared_with.as_ref(), Some(&first));
    assert!(tests.new.is_empty());
    assert_eq!((tests.still_failing[0].id.as_str(), &tests.still_failing[0].since), (TEST, &first));

    let (third, answer) = run_failing(&world, &[]).await;
    answer.unwrap();
    let tests = world.runs.record(&third).unwrap().tests.unwrap();
    assert_eq!(tests.compared_with.as_ref(), Some(&second));
    assert_eq!(tests.fixed, vec![TEST.to_owned()]);
    assert!(tests.failed.is_empty());

    // The first run's alert leads with its new failure; the second, with none new, is one line.
    let alerts = world.notices.sent();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert!(alerts[0].0.ends_with("failed: 1 new test failure(s)"), "{alerts:?}");
    assert!(alerts[0].1.contains(&format!("1 new failure(s): {TEST}")), "{alerts:?}");
    assert!(alerts[1].0.ends_with("failed: 0 new test failure(s)"), "{alerts:?}");
    assert!(!alerts[1].1.contains('\n') && alerts[1].1.contains("no new test failure"), "{alerts:?}");
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_suites_reported_nothing_has_no_test_results() {
    let world = RunWorld::new(NOW);
    let started = world.runner.run(RunKind::Test, start(), &world.invocation("start")).await.unwrap();
    let steps: Vec<(&str, StepStatus)> = started.steps.iter().map(|s| (s.name.as_str(), StepStatus::Passed)).collect();
    world.runs.report(&started.run_id, &steps, Some("succeeded"));
    let resume = RunRequest::Resume { run_id: started.run_id.clone(), wait_seconds: Some(0) };
    let answer = world.runner.run(RunKind::Test, resume, &world.invocation("resume")).await.unwrap();
    assert!(answer.tests.is_none());
    assert!(world.runs.record(&started.run_id).unwrap().tests.is_none());
}
