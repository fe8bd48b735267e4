//! Dry runs on fakes: each branch of each decision table planned, the same errors as the call,
//! and not one write (every call the fakes saw is a read).

use jiff::SignedDuration;

use super::plan::{is_write, Plan};
use crate::domain::{ClusterRequest, DeployRequest, GitRef, RunKind, RunRequest, ScheduleDestroyRequest};
use crate::ports::Clock;
use crate::testing::requests::{cluster, deploy, start, NOW};
use crate::testing::OpsWorld;

/// Takes every call the fakes saw and fails on a write.
fn assert_only_reads(ops: &OpsWorld) {
    let calls = ops.world.faults.take_calls();
    let writes: Vec<&&str> = calls.iter().filter(|call| is_write(call)).collect();
    assert!(writes.is_empty(), "a dry run wrote: {writes:?} (calls: {calls:?})");
}

fn writes(plan: &Plan) -> Vec<&str> {
    plan.plan.iter().map(|entry| entry.write.as_str()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_of_deploy_plans_each_branch_and_writes_nothing() {
    let ops = OpsWorld::new(NOW);
    let provisioner = &ops.world.provisioner;
    ops.world.faults.take_calls();

    // No stack: create it, then the default schedule.
    let plan = provisioner.plan_deploy(&deploy("ci-1")).await.unwrap();
    assert_only_reads(&ops);
    assert_eq!(writes(&plan), ["CloudFormation.CreateStack", "Scheduler.CreateSchedule"]);
    assert_eq!(plan.plan[0].parameters["stack"], "sliderule-cluster-ci-1");
    assert_eq!(plan.plan[0].parameters["parameters"]["ClusterName"], "ci-1");
    assert!(plan.branch.starts_with("step 3"), "{}", plan.branch);
    assert!(ops.world.stacks.created().is_empty() && ops.world.schedules.all().is_empty(), "nothing was made");

    // Missing images: the same error as the deploy, before anything.
    let unbuilt =
        DeployRequest { cluster: cluster("ci-1"), version: Some(GitRef::parse("v0.0.1").unwrap()), requested_by: None };
    assert_eq!(provisioner.plan_deploy(&unbuilt).await.unwrap_err().code(), "ImagesMissing");

    // Running: success, nothing changes.
    provisioner.deploy(deploy("ci-1"), &ops.world.invocation("d1")).await.unwrap();
    ops.world.faults.take_calls();
    let plan = provisioner.plan_deploy(&deploy("ci-1")).await.unwrap();
    assert_only_reads(&ops);
    assert!(plan.plan.is_empty() && plan.branch.starts_with("step 1"), "{plan:?}");

    // Not running and scheduled for delete: ScheduledForDelete.
    ops.world.schedules.insert("destroy.ci-2.20261123T180000", "2026-11-23T18:00:00Z".parse().unwrap());
    assert_eq!(provisioner.plan_deploy(&deploy("ci-2")).await.unwrap_err().code(), "ScheduledForDelete");
    assert_only_reads(&ops);
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_of_schedule_destroy_plans_each_branch_and_writes_nothing() {
    let ops = OpsWorld::new(NOW);
    let provisioner = &ops.world.provisioner;
    let now = ops.world.clock.now();
    let at = |minutes: i64| crate::domain::time::whole_seconds(now + SignedDuration::from_mins(minutes));
    let request =
        |minutes| ScheduleDestroyRequest { cluster: cluster("ci-1"), time_to_destroy: at(minutes), requested_by: None };
    ops.world.faults.take_calls();
    let plan = provisioner.plan_schedule_destroy(&request(60)).await.unwrap();
    assert_eq!(writes(&plan), ["Scheduler.CreateSchedule"]);
    assert!(ops.world.schedules.all().is_empty());

    provisioner.schedule_destroy(request(60), &ops.world.invocation("s1")).await.unwrap();
    ops.world.faults.take_calls();
    let plan = provisioner.plan_schedule_destroy(&request(120)).await.unwrap();
    assert_eq!(writes(&plan), ["Scheduler.CreateSchedule", "Scheduler.DeleteSchedule"], "{plan:?}");
    let plan = provisioner.plan_schedule_destroy(&request(60)).await.unwrap();
    assert!(plan.plan.is_empty(), "the same time: kept: {plan:?}");
    assert_eq!(provisioner.plan_schedule_destroy(&request(24 * 60)).await.unwrap_err().code(), "InvalidRequest");
    assert_only_reads(&ops);

    tokio::time::advance(std::time::Duration::from_secs(57 * 60)).await;
    assert_eq!(provisioner.plan_schedule_destroy(&request(120)).await.unwrap_err().code(), "TooLateToReschedule");
    assert_only_reads(&ops);
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_of_destroy_plans_the_delete_and_the_schedules_and_writes_nothing() {
    let ops = OpsWorld::new(NOW);
    let provisioner = &ops.world.provisioner;
    ops.world.faults.take_calls();
    let plan = provisioner.plan_destroy(&ClusterRequest::new(cluster("ci-1"))).await.unwrap();
    assert!(plan.plan.is_empty(), "no stack: {plan:?}");
    provisioner.deploy(deploy("ci-1"), &ops.world.invocation("d1")).await.unwrap();
    ops.world.faults.take_calls();
    let plan = provisioner.plan_destroy(&ClusterRequest::new(cluster("ci-1"))).await.unwrap();
    assert_only_reads(&ops);
    assert_eq!(writes(&plan), ["CloudFormation.DeleteStack", "Scheduler.DeleteSchedule"]);
    assert!(ops.world.stacks.status("sliderule-cluster-ci-1").is_some(), "still there");
    assert_eq!(
        provisioner.plan_destroy(&ClusterRequest::new(cluster("nobody"))).await.unwrap_err().code(),
        "UnknownCluster"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_of_a_run_plans_its_launch_and_writes_nothing() {
    let ops = OpsWorld::new(NOW);
    let runner = &ops.runs.runner;
    ops.world.faults.take_calls();
    let plan = runner.plan(RunKind::Test, &start("ci-1", "main")).await.unwrap();
    assert_only_reads(&ops);
    assert_eq!(writes(&plan), ["DynamoDB.UpdateItem", "DynamoDB.PutItem", "EC2.RunInstances"]);
    let launch = &plan.plan[2].parameters;
    assert_eq!(launch["market"], "spot");
    assert_eq!(launch["instance_types"][0], "m7g.2xlarge");
    assert_eq!(launch["image"], "ami-al2023-arm64");
    let size = launch["user_data_bytes"].as_u64().unwrap();
    assert!(size > 1000 && size <= crate::domain::EC2_USER_DATA_LIMIT as u64, "{size}");
    assert!(ops.runs.instances.launches().is_empty() && ops.runs.runs.all().is_empty(), "nothing was started");

    // The same run active: it would answer with it.
    let started = runner.run(RunKind::Test, start("ci-1", "main"), &ops.world.invocation("r1")).await.unwrap();
    ops.world.faults.take_calls();
    let plan = runner.plan(RunKind::Test, &start("ci-1", "main")).await.unwrap();
    assert!(plan.plan.is_empty() && plan.branch.contains(started.run_id.as_str()), "{plan:?}");
    // A cap reached: the same error as a start.
    runner.run(RunKind::Test, start("developers", "main"), &ops.world.invocation("r2")).await.unwrap();
    runner.run(RunKind::Test, start("developers", "v1"), &ops.world.invocation("r3")).await.unwrap();
    ops.world.faults.take_calls();
    assert_eq!(runner.plan(RunKind::Test, &start("developers", "v2")).await.unwrap_err().code(), "Busy");
    assert_only_reads(&ops);
    // A resume plans nothing; a bad version is refused as a start would refuse it.
    let resume = RunRequest::Resume { run_id: started.run_id.clone(), wait_seconds: None };
    assert_eq!(runner.plan(RunKind::Test, &resume).await.unwrap_err().code(), "InvalidRequest");
    assert_eq!(runner.plan(RunKind::Build, &start("ci-1", "feature/x")).await.unwrap_err().code(), "InvalidRequest");
}
