//! What launches teach, on fakes with paused time: a type spot refused is tried last by the next
//! run, and repeated interruptions send a profile's runs on demand for an hour; boot times and
//! errors are what `status` shows.

use std::time::Duration;

use crate::domain::launch_log::{launch_errors, LaunchOutcome};
use crate::domain::{ClusterName, GitRef, Market, RunKind, RunRequest, StepStatus};
use crate::ports::Clock;
use crate::testing::RunWorld;

const NOW: &str = "2026-11-23T12:00:00Z";

fn start(cluster: &str) -> RunRequest {
    RunRequest::Start {
        cluster: ClusterName::parse(cluster).unwrap(),
        version: GitRef::parse("main").unwrap(),
        wait_seconds: Some(0),
        hold_minutes: 0,
        requested_by: None,
    }
}

fn tried(world: &RunWorld) -> Vec<(String, Market)> {
    world.instances.launches().into_iter().map(|launch| (launch.instance_type, launch.market)).collect()
}

#[tokio::test(start_paused = true)]
async fn a_type_spot_refused_is_tried_last_by_the_next_run_until_the_window_passes() {
    let world = RunWorld::new(NOW);
    world.instances.no_capacity_for("m7g.2xlarge");
    world.runner.run(RunKind::Test, start("ci-1"), &world.invocation("r1")).await.unwrap();
    assert_eq!(tried(&world)[..2], [("m7g.2xlarge".into(), Market::Spot), ("m6g.2xlarge".into(), Market::Spot)]);
    let errors = launch_errors(&world.launch_log.events(), world.clock.now());
    assert_eq!(
        (errors[0].instance_type.as_str(), errors[0].code.as_str(), errors[0].count),
        ("m7g.2xlarge", "InsufficientInstanceCapacity", 1)
    );

    world.instances.capacity_back();
    world.runner.run(RunKind::Test, start("ci-2"), &world.invocation("r2")).await.unwrap();
    assert_eq!(tried(&world)[2].0, "m6g.2xlarge", "the refused type is tried last: {:?}", tried(&world));

    tokio::time::advance(Duration::from_secs(31 * 60)).await;
    world.runner.run(RunKind::Test, start("ci-3"), &world.invocation("r3")).await.unwrap();
    assert_eq!(tried(&world)[3].0, "m7g.2xlarge", "half an hour on, the profile's order again");
}

#[tokio::test(start_paused = true)]
async fn two_interruptions_in_half_an_hour_send_the_profiles_runs_on_demand_for_an_hour() {
    let world = RunWorld::new(NOW);
    for cluster in ["ci-1", "ci-2"] {
        let started = world.runner.run(RunKind::Test, start(cluster), &world.invocation(cluster)).await.unwrap();
        let names: Vec<&str> = started.steps.iter().map(|s| s.name.as_str()).collect();
        world.runs.report(&started.run_id, &[(names[0], StepStatus::Passed), (names[1], StepStatus::Running)], None);
        world.runs.report_interrupted(&started.run_id);
        let resume = RunRequest::Resume { run_id: started.run_id.clone(), wait_seconds: Some(0) };
        world.runner.run(RunKind::Test, resume, &world.invocation(cluster)).await.unwrap();
        tokio::time::advance(Duration::from_secs(5 * 60)).await;
    }
    let interrupted = world.launch_log.events().into_iter().filter(|e| e.outcome == LaunchOutcome::Interrupted).count();
    assert_eq!(interrupted, 2, "{:?}", world.launch_log.events());
    let launches_before = tried(&world).len();
    world.runner.run(RunKind::Test, start("ci-3"), &world.invocation("r3")).await.unwrap();
    assert_eq!(tried(&world)[launches_before].1, Market::OnDemand, "{:?}", tried(&world));

    tokio::time::advance(Duration::from_secs(61 * 60)).await;
    let launches_before = tried(&world).len();
    world.runner.run(RunKind::Test, start("ci-4"), &world.invocation("r4")).await.unwrap();
    assert_eq!(tried(&world)[launches_before].1, Market::Spot, "an hour on, spot again");
}
