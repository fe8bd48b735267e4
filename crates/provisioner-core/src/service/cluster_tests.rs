//! The decision tables of DEPLOY, SCHEDULE_DESTROY and DESTROY, row by row, on fakes with
//! paused time: no test waits for real.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::domain::stack_status::KNOWN_STATUSES;
use crate::domain::{ClusterRequest, DeployRequest, GitRef, ScheduleDestroyRequest, StackPhase, StackStatus};
use crate::error::Error;
use crate::ports::{Clock, Lease};
use crate::testing::{Call, Fault, StackBehaviour, World};

const NOW: &str = "2026-11-23T12:00:00Z";
const STACK: &str = "sliderule-cluster-ci-1";

fn cluster(name: &str) -> ClusterName {
    ClusterName::parse(name).unwrap()
}

fn request(name: &str) -> ClusterRequest {
    ClusterRequest::new(cluster(name))
}

/// A deploy of the profile's default version.
fn deploy_request(name: &str) -> DeployRequest {
    DeployRequest { cluster: cluster(name), version: None, requested_by: None }
}

fn deploy_version(name: &str, version: &str) -> DeployRequest {
    DeployRequest { cluster: cluster(name), version: Some(GitRef::parse(version).unwrap()), requested_by: None }
}

const IMAGES: [&str; 5] = ["sliderule", "ilb", "monitor", "monitor-agent", "ams"];

fn at(raw: &str) -> Timestamp {
    raw.parse().unwrap()
}

fn is_create(call: &Call) -> bool {
    matches!(call, Call::CreateStack(_))
}

fn is_delete(call: &Call) -> bool {
    matches!(call, Call::DeleteStack(_))
}

fn is_describe(call: &Call) -> bool {
    matches!(call, Call::DescribeStack(_))
}

// ---- DEPLOY ----

#[tokio::test(start_paused = true)]
async fn deploy_runs_the_profile_default_version_when_none_is_asked() {
    let world = World::new(NOW);
    let response = world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r1")).await.unwrap();
    assert_eq!((response.version.as_str(), response.version_differs), ("latest", false));
    let created = world.stacks.created();
    assert!(created[0].parameters.contains(&("Version".into(), "latest".into())), "{:?}", created[0].parameters);
}

#[tokio::test(start_paused = true)]
async fn deploy_of_a_version_whose_images_exist_runs_that_tag() {
    let world = World::new(NOW);
    let images: Vec<String> = IMAGES.iter().map(|i| i.to_string()).collect();
    world.images.push(&images, "unstable");
    let response = world.provisioner.deploy(deploy_version("ci-1", "main"), &world.invocation("r1")).await.unwrap();
    assert_eq!(response.action, deploy::DeployAction::Created);
    assert_eq!(
        (response.version.as_str(), response.requested_version.as_str(), response.version_differs),
        ("unstable", "unstable", false)
    );
    let spec = &world.stacks.created()[0];
    assert!(spec.parameters.contains(&("Version".into(), "unstable".into())));
    assert!(spec.parameters.contains(&("ClusterName".into(), "ci-1".into())));
    assert!(spec.tags.contains(&("sliderule:version".into(), "unstable".into())));
    // Every image the profile runs was asked for, at the tag.
    assert_eq!(world.images.calls(), vec![Call::MissingImages(images, "unstable".into())]);
}

#[tokio::test(start_paused = true)]
async fn deploy_of_a_version_with_missing_images_creates_nothing_and_names_them() {
    let world = World::new(NOW);
    world.images.push(&["sliderule".to_string(), "ilb".to_string()], "v5.5.0");
    let error = world.provisioner.deploy(deploy_version("ci-1", "v5.5.0"), &world.invocation("r1")).await.unwrap_err();
    assert_eq!(error.code(), "ImagesMissing");
    let message = error.to_string();
    for expected in [
        "monitor, monitor-agent, ams",
        "'v5.5.0'",
        "make cluster-build CLUSTER=ci-1 VERSION=v5.5.0",
        "nothing was created",
    ] {
        assert!(message.contains(expected), "{expected}: {message}");
    }
    assert!(!message.contains("sliderule,"), "{message}");
    assert_eq!(world.stacks.count(is_create), 0);
    assert!(world.locks.holder("ci-1").is_none(), "the lock is released");
}

#[tokio::test(start_paused = true)]
async fn deploy_does_not_replace_a_failed_stack_with_one_whose_images_are_missing() {
    let world = World::new(NOW);
    world.stacks.seed(STACK, "ROLLBACK_COMPLETE", None);
    let error = world.provisioner.deploy(deploy_version("ci-1", "v9.9.9"), &world.invocation("r1")).await.unwrap_err();
    assert_eq!(error.code(), "ImagesMissing");
    assert_eq!((world.stacks.count(is_create), world.stacks.count(is_delete)), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn deploy_of_a_running_cluster_at_another_version_succeeds_and_says_which_runs() {
    let world = World::new(NOW);
    world.stacks.seed_version(STACK, "v5.4.0", "CREATE_COMPLETE", None);
    let response = world.provisioner.deploy(deploy_version("ci-1", "v5.5.0"), &world.invocation("r1")).await.unwrap();
    assert_eq!(response.action, deploy::DeployAction::AlreadyRunning);
    assert_eq!(
        (response.version.as_str(), response.requested_version.as_str(), response.version_differs),
        ("v5.4.0", "v5.5.0", true)
    );
    let note = response.note.unwrap();
    assert!(note.contains("runs version 'v5.4.0', not 'v5.5.0'"), "{note}");
    // Running answers without asking the registry: nothing would be created.
    assert!(world.images.calls().is_empty());
    assert_eq!(world.stacks.count(is_create), 0);
}

#[tokio::test(start_paused = true)]
async fn deploy_of_a_bad_version_is_an_invalid_request_before_any_call() {
    let world = World::new(NOW);
    let error =
        world.provisioner.deploy(deploy_version("ci-1", "release/5.x"), &world.invocation("r1")).await.unwrap_err();
    assert_eq!(error.code(), "InvalidRequest");
    assert!(world.stacks.calls().is_empty() && world.images.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn deploy_of_a_running_cluster_succeeds_with_one_call_and_no_lock() {
    let world = World::new(NOW);
    world.stacks.seed(STACK, "CREATE_COMPLETE", None);
    let response = world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r1")).await.unwrap();
    assert_eq!(response.action, deploy::DeployAction::AlreadyRunning);
    assert_eq!(response.stack_status, "CREATE_COMPLETE");
    assert_eq!(world.stacks.calls(), vec![Call::DescribeStack(STACK.into())]);
    assert!(world.schedules.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn deploy_of_a_running_cluster_succeeds_even_when_a_delete_is_scheduled() {
    let world = World::new(NOW);
    world.stacks.seed(STACK, "UPDATE_COMPLETE", None);
    world.schedules.insert("destroy.ci-1.20261123T130000", at("2026-11-23T13:00:00Z"));
    let response = world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r1")).await.unwrap();
    assert_eq!(response.action, deploy::DeployAction::AlreadyRunning);
}

#[tokio::test(start_paused = true)]
async fn deploy_of_a_stopped_cluster_scheduled_for_delete_fails_without_creating() {
    let world = World::new(NOW);
    world.schedules.insert("destroy.ci-1.20261123T130000", at("2026-11-23T13:00:00Z"));
    let error = world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r1")).await.unwrap_err();
    assert_eq!(error.code(), "ScheduledForDelete");
    assert!(error.to_string().contains("2026-11-23T13:00:00Z"), "{error}");
    assert_eq!(world.stacks.count(is_create), 0);
    assert!(world.locks.holder("ci-1").is_none(), "the lock is released");
}

#[tokio::test(start_paused = true)]
async fn deploy_ignores_schedules_of_other_clusters_sharing_a_prefix() {
    let world = World::new(NOW);
    world.schedules.insert("destroy.ci-10.20261123T130000", at("2026-11-23T13:00:00Z"));
    let response = world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r1")).await.unwrap();
    assert_eq!(response.action, deploy::DeployAction::Created);
}

#[tokio::test(start_paused = true)]
async fn deploy_of_an_absent_cluster_creates_the_stack_and_waits_for_it() {
    let world = World::new(NOW);
    let response = world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r1")).await.unwrap();
    assert_eq!(response.action, deploy::DeployAction::Created);
    assert_eq!(response.stack_status, "CREATE_COMPLETE");
    assert!((90.0..=94.0).contains(&response.elapsed_seconds), "noticed within a poll: {}", response.elapsed_seconds);
    let created = world.stacks.created();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].name, STACK);
    assert!(created[0].parameters.contains(&("ClusterName".into(), "ci-1".into())));
    assert!(created[0].tags.contains(&("sliderule:cluster".into(), "ci-1".into())));
    assert!(created[0].template_body.contains("AWS::AutoScaling::AutoScalingGroup"));
}

#[tokio::test(start_paused = true)]
async fn deploy_polls_no_more_than_every_four_seconds() {
    let world = World::new(NOW);
    world.stacks.set_behaviour(StackBehaviour { create_takes: Duration::from_secs(120), ..Default::default() });
    world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r1")).await.unwrap();
    let describes = world.stacks.count(is_describe);
    // 2 before creating, then one every 4 s over 120 s.
    assert!((30..=34).contains(&describes), "{describes} describes");
}

#[tokio::test(start_paused = true)]
async fn deploy_that_fails_reports_the_status_and_reasons() {
    let world = World::new(NOW);
    world.stacks.set_behaviour(StackBehaviour {
        create_ends_in: "ROLLBACK_COMPLETE",
        failure_reasons: vec!["NodeGroup: You have requested more vCPU capacity than your current vCPU limit".into()],
        ..Default::default()
    });
    let error = world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r1")).await.unwrap_err();
    assert_eq!(error.code(), "DeployFailed");
    let text = error.to_string();
    assert!(text.contains("ROLLBACK_COMPLETE") && text.contains("vCPU limit"), "{text}");
    assert_eq!(world.stacks.count(is_create), 1, "our own failed create is not retried");
    assert_eq!(world.stacks.count(is_delete), 0, "the failed stack is kept for inspection");
}

#[tokio::test(start_paused = true)]
async fn deploy_times_out_after_ten_minutes() {
    let world = World::new(NOW);
    world.stacks.set_behaviour(StackBehaviour { create_takes: Duration::from_secs(3600), ..Default::default() });
    let error = world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r1")).await.unwrap_err();
    assert_eq!(error.code(), "DeployTimedOut");
    assert!(error.to_string().contains("CREATE_IN_PROGRESS"), "{error}");
    let waited = world.clock.now().duration_since(at(NOW));
    assert_eq!(waited, SignedDuration::from_mins(10));
}

#[tokio::test(start_paused = true)]
async fn the_wait_stops_before_the_invocation_deadline() {
    let world = World::new(NOW);
    world.stacks.set_behaviour(StackBehaviour { create_takes: Duration::from_secs(3600), ..Default::default() });
    let invocation = world.invocation_with("r1", Duration::from_secs(120));
    let error = world.provisioner.deploy(deploy_request("ci-1"), &invocation).await.unwrap_err();
    assert_eq!(error.code(), "DeployTimedOut");
    let waited = world.clock.now().duration_since(at(NOW));
    assert_eq!(waited, SignedDuration::from_secs(120) - SignedDuration::try_from(DEADLINE_MARGIN).unwrap());
}

/// What deploy does for a stack found in each status. In-progress statuses move on to where
/// CloudFormation would take them.
#[tokio::test(start_paused = true)]
async fn deploy_handles_every_stack_status() {
    for status in KNOWN_STATUSES {
        let world = World::new(NOW);
        let then = match *status {
            "ROLLBACK_IN_PROGRESS" => Some("ROLLBACK_COMPLETE"),
            "DELETE_IN_PROGRESS" => Some("DELETE_COMPLETE"),
            "UPDATE_ROLLBACK_IN_PROGRESS" | "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS" => {
                Some("UPDATE_ROLLBACK_COMPLETE")
            }
            "IMPORT_ROLLBACK_IN_PROGRESS" => Some("IMPORT_ROLLBACK_COMPLETE"),
            s if s.ends_with("_IN_PROGRESS") && s != "REVIEW_IN_PROGRESS" => Some("CREATE_COMPLETE"),
            _ => None,
        };
        world.stacks.seed(STACK, status, then.map(|next| (Duration::from_secs(45), next)));
        world
            .stacks
            .set_behaviour(StackBehaviour { failure_reasons: vec!["resource X failed".into()], ..Default::default() });
        let outcome = world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r1")).await;
        let creates = world.stacks.count(is_create);
        let deletes = world.stacks.count(is_delete);
        match StackStatus::new(*status).phase() {
            StackPhase::Running => {
                assert_eq!(outcome.unwrap().action, deploy::DeployAction::AlreadyRunning, "{status}");
                assert_eq!((creates, deletes), (0, 0), "{status}");
            }
            StackPhase::InProgress if *status == "ROLLBACK_IN_PROGRESS" => {
                // A create that was failing: once it settles the stack is replaced.
                assert_eq!(outcome.unwrap().action, deploy::DeployAction::Replaced, "{status}");
                assert_eq!((creates, deletes), (1, 1), "{status}");
            }
            StackPhase::InProgress => {
                assert_eq!(outcome.unwrap().action, deploy::DeployAction::Waited, "{status}");
                assert_eq!((creates, deletes), (0, 0), "{status}");
            }
            StackPhase::Absent | StackPhase::Deleting => {
                assert_eq!(outcome.unwrap().action, deploy::DeployAction::Created, "{status}");
                assert_eq!((creates, deletes), (1, 0), "{status}");
            }
            StackPhase::FailedReplaceable => {
                assert_eq!(outcome.unwrap().action, deploy::DeployAction::Replaced, "{status}");
                assert_eq!((creates, deletes), (1, 1), "{status}");
            }
            StackPhase::FailedNeedsAttention => {
                let error = outcome.unwrap_err();
                assert_eq!(error.code(), "DeployFailed", "{status}");
                assert!(
                    error.to_string().contains(status) && error.to_string().contains("resource X failed"),
                    "{error}"
                );
                assert!(error.to_string().contains("destroy the cluster"), "{error}");
                assert_eq!((creates, deletes), (0, 0), "{status}");
            }
        }
        assert!(world.locks.holder("ci-1").is_none(), "{status}: lock released");
    }
}

#[tokio::test(start_paused = true)]
async fn deploy_waits_for_a_stack_stuck_in_progress_and_then_times_out() {
    let world = World::new(NOW);
    world.stacks.seed(STACK, "UPDATE_IN_PROGRESS", None);
    let error = world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r1")).await.unwrap_err();
    assert_eq!(error.code(), "DeployTimedOut");
    assert_eq!(world.stacks.count(is_create), 0);
}

#[tokio::test(start_paused = true)]
async fn deploy_of_an_unknown_or_invalid_cluster_makes_no_call() {
    let world = World::new(NOW);
    let error = world.provisioner.deploy(deploy_request("other"), &world.invocation("r1")).await.unwrap_err();
    assert_eq!(error.code(), "UnknownCluster");
    assert!(world.stacks.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn two_deploys_at_once_create_one_stack_and_both_succeed() {
    let world = World::new(NOW);
    let first = world.invocation("r1");
    let second = world.invocation("r2");
    let (a, b) = tokio::join!(
        world.provisioner.deploy(deploy_request("ci-1"), &first),
        world.provisioner.deploy(deploy_request("ci-1"), &second)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(world.stacks.count(is_create), 1);
    // The second waits for the lock and answers as soon as the first's stack runs.
    let mut actions = [a.action, b.action];
    actions.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(actions, [deploy::DeployAction::Created, deploy::DeployAction::Waited]);
    assert!((a.elapsed_seconds - b.elapsed_seconds).abs() <= 4.0, "{} {}", a.elapsed_seconds, b.elapsed_seconds);
}

#[tokio::test(start_paused = true)]
async fn a_contender_answers_busy_when_the_holder_outlasts_its_deadline() {
    let world = World::new(NOW);
    let key = "ci-1";
    world.locks.put(
        key,
        Lease {
            owner: "other".into(),
            operation: "destroy".into(),
            acquired_at: at(NOW),
            expires_at: at("2026-11-23T12:15:00Z"),
        },
    );
    let error = world
        .provisioner
        .deploy(deploy_request("ci-1"), &world.invocation_with("r1", Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "Busy");
    assert!(error.to_string().contains("destroy"), "{error}");
    assert_eq!(world.stacks.count(is_create), 0);
    assert_eq!(world.locks.holder(key).unwrap().owner, "other", "the holder keeps its lock");
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_taken_over() {
    let world = World::new(NOW);
    let key = "ci-1";
    world.locks.put(
        key,
        Lease {
            owner: "crashed".into(),
            operation: "deploy".into(),
            acquired_at: at("2026-11-23T11:30:00Z"),
            expires_at: at("2026-11-23T11:59:59Z"),
        },
    );
    let response = world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r1")).await.unwrap();
    assert_eq!(response.action, deploy::DeployAction::Created);
    assert!(world.locks.holder(key).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_contender_proceeds_when_the_holder_releases_in_time() {
    let world = World::new(NOW);
    world.stacks.seed(STACK, "CREATE_COMPLETE", None);
    let destroy = world.invocation("r-destroy");
    let deploy = world.invocation("r-deploy");
    // Destroy takes the lock first; deploy sees a stack being deleted, waits, then recreates.
    let destroying = world.provisioner.destroy(request("ci-1"), &destroy);
    let deploying = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        world.provisioner.deploy(deploy_request("ci-1"), &deploy).await
    };
    let (destroyed, deployed) = tokio::join!(destroying, deploying);
    assert_eq!(destroyed.unwrap().action, destroy::DestroyAction::Deleted);
    assert_eq!(deployed.unwrap().action, deploy::DeployAction::Created);
    let calls = world.stacks.calls();
    let delete_at = calls.iter().position(is_delete).unwrap();
    let create_at = calls.iter().position(is_create).unwrap();
    assert!(delete_at < create_at, "the create comes after the delete finished: {calls:?}");
}

/// A holder killed midway (its invocation crashed) blocks its cluster for one lease at most.
#[tokio::test(start_paused = true)]
async fn a_crashed_holder_blocks_its_cluster_for_one_lease_at_most() {
    let world = World::new(NOW);
    world
        .stacks
        .set_behaviour(StackBehaviour { create_takes: Duration::from_secs(9 * 60), ..StackBehaviour::default() });
    let (provisioner, crashed) = (world.provisioner.clone(), world.invocation("r-crashed"));
    let holder = tokio::spawn(async move { provisioner.deploy(deploy_request("ci-1"), &crashed).await });
    tokio::time::sleep(Duration::from_secs(45)).await;
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());
    let key = "ci-1";
    assert_eq!(world.locks.holder(key).unwrap().owner, "r-crashed", "the crashed holder's lock is left behind");
    let died = world.clock.now();
    let next = world
        .provisioner
        .schedule_destroy(schedule_request("ci-1", "2026-11-23T18:00:00Z"), &world.invocation("r-next"))
        .await;
    next.unwrap();
    let blocked = world.clock.now().duration_since(died);
    // Renewed at 20 s and 40 s, the lease ends at 100 s.
    assert!(
        blocked >= SignedDuration::from_secs(50) && blocked <= SignedDuration::from_secs(60),
        "blocked for {blocked:?}"
    );
}

/// While another operation holds the cluster, a deploy answers once the stack runs.
#[tokio::test(start_paused = true)]
async fn a_waiting_deploy_answers_as_soon_as_the_stack_runs() {
    let world = World::new(NOW);
    world.stacks.seed(STACK, "CREATE_IN_PROGRESS", Some((Duration::from_secs(90), "CREATE_COMPLETE")));
    let key = "ci-1";
    let working = Lease {
        owner: "other".into(),
        operation: "deploy".into(),
        acquired_at: at(NOW),
        expires_at: at("2026-11-23T12:14:00Z"),
    };
    world.locks.put(key, working);
    let response = world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r1")).await.unwrap();
    assert_eq!(response.action, deploy::DeployAction::Waited);
    assert!((90.0..=96.0).contains(&response.elapsed_seconds), "{}", response.elapsed_seconds);
    assert_eq!(world.locks.holder(key).unwrap().owner, "other", "the holder keeps its lock");
    assert_eq!(world.stacks.count(is_create), 0);
}

#[tokio::test(start_paused = true)]
async fn a_release_that_fails_is_tried_again() {
    for fault in [Fault::Throttled, Fault::ServerError, Fault::Reset, Fault::LostAnswer] {
        let world = World::new(NOW);
        world.faults.script("ReleaseLock", fault, 6);
        world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r1")).await.unwrap();
        let key = "ci-1";
        assert_eq!(world.locks.holder_at(key, world.clock.now()), None, "{fault:?}: released after the answer");
    }
}

#[tokio::test(start_paused = true)]
async fn a_holder_renews_its_lease_through_failures_and_stops_before_it_would_end() {
    let key = "ci-1";
    // Two failed renewals are absorbed: the deploy finishes.
    let world = World::new(NOW);
    world
        .stacks
        .set_behaviour(StackBehaviour { create_takes: Duration::from_secs(5 * 60), ..StackBehaviour::default() });
    world.faults.script("RenewLock", Fault::Throttled, 2);
    let response = world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r1")).await.unwrap();
    assert_eq!(response.action, deploy::DeployAction::Created);
    // Renewals that keep failing stop the work while the lease still holds, and the lock is released.
    let world = World::new(NOW);
    world
        .stacks
        .set_behaviour(StackBehaviour { create_takes: Duration::from_secs(5 * 60), ..StackBehaviour::default() });
    world.faults.script("RenewLock", Fault::Throttled, 1000);
    let error = world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r2")).await.unwrap_err();
    assert_eq!(error.code(), "AwsError", "{error}");
    let stopped = world.clock.now();
    assert!(stopped < at(NOW) + SignedDuration::from_secs(60), "stopped at {stopped}, before the lease ended");
    assert_eq!(world.locks.holder_at(key, stopped), None);
    // A holder whose lock was taken over stops.
    let world = World::new(NOW);
    world
        .stacks
        .set_behaviour(StackBehaviour { create_takes: Duration::from_secs(5 * 60), ..StackBehaviour::default() });
    let taking_over = async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let thief = Lease {
            owner: "thief".into(),
            operation: "destroy".into(),
            acquired_at: world.clock.now(),
            expires_at: at("2026-11-23T13:00:00Z"),
        };
        world.locks.put(key, thief);
    };
    let invocation = world.invocation("r3");
    let (deployed, ()) = tokio::join!(world.provisioner.deploy(deploy_request("ci-1"), &invocation), taking_over);
    let error = deployed.unwrap_err();
    assert_eq!(error.code(), "Busy", "{error}");
    assert!(world.clock.now() <= at(NOW) + SignedDuration::from_secs(41), "it stopped at the next renewal");
    assert_eq!(world.locks.holder(key).unwrap().owner, "thief", "and left the new holder's lock alone");
}

/// The contender that has waited longest gets a freed lock, not one that comes just after.
#[tokio::test(start_paused = true)]
async fn the_contender_that_waited_longest_goes_next() {
    let world = World::new(NOW);
    let key = "ci-1";
    let holder = Lease {
        owner: "holder".into(),
        operation: "destroy".into(),
        acquired_at: at(NOW),
        expires_at: at("2026-11-23T12:00:30Z"),
    };
    world.locks.put(key, holder);
    let clock = world.clock.clone();
    // The early one asks at 0, 2, ... 30, 32 s; the late one comes at 31 s, when the lease has ended.
    let early = async {
        let outcome = world
            .provisioner
            .schedule_destroy(schedule_request("ci-1", "2026-11-23T18:00:00Z"), &world.invocation("early"))
            .await;
        outcome.map(|_| clock.now())
    };
    let late = async {
        tokio::time::sleep(Duration::from_secs(31)).await;
        let outcome = world
            .provisioner
            .schedule_destroy(schedule_request("ci-1", "2026-11-23T19:00:00Z"), &world.invocation("late"))
            .await;
        outcome.map(|_| clock.now())
    };
    let (early, late) = tokio::join!(early, late);
    let (early, late) = (early.unwrap(), late.unwrap());
    assert!(early < late, "the early one answered at {early}, the late one at {late}");
    let names: Vec<String> = world.schedules.all().into_keys().collect();
    assert_eq!(names, ["destroy.ci-1.20261123T190000"], "the late one ran last");
}

// ---- SCHEDULE_DESTROY ----

fn schedule_request(name: &str, when: &str) -> ScheduleDestroyRequest {
    ScheduleDestroyRequest { cluster: cluster(name), time_to_destroy: at(when), requested_by: None }
}

#[tokio::test(start_paused = true)]
async fn schedule_destroy_creates_a_schedule_whose_input_is_the_destroy_event() {
    let world = World::new(NOW);
    let response = world
        .provisioner
        .schedule_destroy(schedule_request("ci-1", "2026-11-23T15:00:00Z"), &world.invocation("r1"))
        .await
        .unwrap();
    assert_eq!(response.time_to_destroy, "2026-11-23T15:00:00Z");
    assert_eq!(response.schedule_name, "destroy.ci-1.20261123T150000");
    let all = world.schedules.all();
    let (when, input) = &all["destroy.ci-1.20261123T150000"];
    assert_eq!(*when, at("2026-11-23T15:00:00Z"));
    assert_eq!(ClusterRequest::parse(serde_json::from_str(input).unwrap()).unwrap(), request("ci-1"));
}

/// The guard, at the exact boundary: an existing schedule 5:01, 5:00 and 4:59 away.
#[tokio::test(start_paused = true)]
async fn schedule_destroy_moves_a_schedule_only_more_than_five_minutes_ahead() {
    let cases = [
        ("2026-11-23T12:05:01Z", true),
        ("2026-11-23T12:05:00Z", false),
        ("2026-11-23T12:04:59Z", false),
        ("2026-11-23T12:00:00Z", false),
        ("2026-11-23T11:59:00Z", false),
        ("2026-11-24T12:00:00Z", true),
    ];
    for (existing_at, movable) in cases {
        let world = World::new(NOW);
        let existing = schedule_name(&cluster("ci-1"), at(existing_at));
        world.schedules.insert(&existing, at(existing_at));
        let outcome = world
            .provisioner
            .schedule_destroy(schedule_request("ci-1", "2026-11-23T18:00:00Z"), &world.invocation("r1"))
            .await;
        let names: Vec<String> = world.schedules.all().into_keys().collect();
        if movable {
            let response = outcome.unwrap();
            assert_eq!(response.replaced, vec![format!("{existing}@{existing_at}")], "{existing_at}");
            assert_eq!(names, vec!["destroy.ci-1.20261123T180000".to_string()], "{existing_at}");
        } else {
            let error = outcome.unwrap_err();
            assert_eq!(error.code(), "TooLateToReschedule", "{existing_at}");
            assert!(error.to_string().contains(existing_at), "{error}");
            assert_eq!(names, vec![existing], "{existing_at}: the schedule is kept");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn schedule_destroy_removes_every_schedule_of_the_cluster_whatever_its_suffix() {
    let world = World::new(NOW);
    world.schedules.insert("destroy.ci-1.20261123T130000", at("2026-11-23T13:00:00Z"));
    world.schedules.insert("destroy.ci-1.manual", at("2026-11-23T14:00:00Z"));
    world.schedules.insert("destroy.ci-10.20261123T130000", at("2026-11-23T13:00:00Z"));
    world
        .provisioner
        .schedule_destroy(schedule_request("ci-1", "2026-11-23T18:00:00Z"), &world.invocation("r1"))
        .await
        .unwrap();
    let names: Vec<String> = world.schedules.all().into_keys().collect();
    assert_eq!(names, vec!["destroy.ci-1.20261123T180000", "destroy.ci-10.20261123T130000"]);
}

#[tokio::test(start_paused = true)]
async fn schedule_destroy_to_the_same_time_again_succeeds() {
    let world = World::new(NOW);
    for _ in 0..2 {
        world
            .provisioner
            .schedule_destroy(schedule_request("ci-1", "2026-11-23T18:00:00Z"), &world.invocation("r1"))
            .await
            .unwrap();
    }
    assert_eq!(world.schedules.all().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn schedule_destroy_creates_the_new_schedule_before_removing_the_old() {
    let world = World::new(NOW);
    let old = "destroy.ci-1.20261123T130000";
    world.schedules.insert(old, at("2026-11-23T13:00:00Z"));
    world
        .provisioner
        .schedule_destroy(schedule_request("ci-1", "2026-11-23T18:00:00Z"), &world.invocation("r1"))
        .await
        .unwrap();
    let changes: Vec<Call> =
        world.schedules.calls().into_iter().filter(|c| !matches!(c, Call::ListSchedules(_))).collect();
    assert_eq!(
        changes,
        vec![Call::CreateSchedule("destroy.ci-1.20261123T180000".into()), Call::DeleteSchedule(old.into())]
    );
}

#[tokio::test(start_paused = true)]
async fn schedule_destroy_that_cannot_create_keeps_the_old_schedule() {
    let world = World::new(NOW);
    let old = "destroy.ci-1.20261123T130000";
    world.schedules.insert(old, at("2026-11-23T13:00:00Z"));
    world.schedules.fail_creates("ServiceQuotaExceededException");
    let error = world
        .provisioner
        .schedule_destroy(schedule_request("ci-1", "2026-11-23T18:00:00Z"), &world.invocation("r1"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "AwsError");
    assert_eq!(world.schedules.all().into_keys().collect::<Vec<_>>(), vec![old.to_string()]);
}

#[tokio::test(start_paused = true)]
async fn schedule_destroy_keeps_a_schedule_already_at_the_time() {
    let world = World::new(NOW);
    world
        .provisioner
        .schedule_destroy(schedule_request("ci-1", "2026-11-23T18:00:00Z"), &world.invocation("r1"))
        .await
        .unwrap();
    let again = world
        .provisioner
        .schedule_destroy(schedule_request("ci-1", "2026-11-23T18:00:00Z"), &world.invocation("r2"))
        .await
        .unwrap();
    assert!(again.replaced.is_empty());
    assert_eq!(
        world
            .schedules
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::CreateSchedule(_) | Call::DeleteSchedule(_)))
            .count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn schedule_destroy_of_an_unknown_cluster_is_refused() {
    let world = World::new(NOW);
    let error = world
        .provisioner
        .schedule_destroy(schedule_request("other", "2026-11-23T18:00:00Z"), &world.invocation("r1"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "UnknownCluster");
    assert!(world.schedules.calls().is_empty());
}

// ---- DESTROY ----

#[tokio::test(start_paused = true)]
async fn destroy_deletes_the_stack_waits_and_removes_every_schedule() {
    let world = World::new(NOW);
    world.stacks.seed(STACK, "CREATE_COMPLETE", None);
    world.schedules.insert("destroy.ci-1.20261123T130000", at("2026-11-23T13:00:00Z"));
    world.schedules.insert("destroy.ci-1.20261124T130000", at("2026-11-24T13:00:00Z"));
    world.schedules.insert("destroy.ci-10.20261123T130000", at("2026-11-23T13:00:00Z"));
    let response = world.provisioner.destroy(request("ci-1"), &world.invocation("r1")).await.unwrap();
    assert_eq!(response.action, destroy::DestroyAction::Deleted);
    assert_eq!(response.schedules_removed, vec!["destroy.ci-1.20261123T130000", "destroy.ci-1.20261124T130000"]);
    assert!(world.stacks.status(STACK).is_none());
    assert_eq!(world.schedules.all().into_keys().collect::<Vec<_>>(), vec!["destroy.ci-10.20261123T130000"]);
    assert!((60.0..=64.0).contains(&response.elapsed_seconds), "{}", response.elapsed_seconds);
}

#[tokio::test(start_paused = true)]
async fn destroy_of_an_absent_cluster_succeeds_and_still_removes_schedules() {
    let world = World::new(NOW);
    world.schedules.insert("destroy.ci-1.20261123T130000", at("2026-11-23T13:00:00Z"));
    let response = world.provisioner.destroy(request("ci-1"), &world.invocation("r1")).await.unwrap();
    assert_eq!(response.action, destroy::DestroyAction::AlreadyAbsent);
    assert_eq!(response.schedules_removed.len(), 1);
    assert_eq!(world.stacks.count(is_delete), 0);
}

#[tokio::test(start_paused = true)]
async fn destroy_that_times_out_keeps_the_schedules() {
    let world = World::new(NOW);
    world.stacks.seed(STACK, "CREATE_COMPLETE", None);
    world.stacks.set_behaviour(StackBehaviour { delete_takes: Duration::from_secs(3600), ..Default::default() });
    world.schedules.insert("destroy.ci-1.20261123T130000", at("2026-11-23T13:00:00Z"));
    let error = world.provisioner.destroy(request("ci-1"), &world.invocation("r1")).await.unwrap_err();
    assert_eq!(error.code(), "DestroyTimedOut");
    assert!(error.to_string().contains("DELETE_IN_PROGRESS"), "{error}");
    assert_eq!(world.schedules.all().len(), 1, "the safety net stays");
    assert_eq!(world.clock.now().duration_since(at(NOW)), SignedDuration::from_mins(10));
}

#[tokio::test(start_paused = true)]
async fn destroy_that_cannot_delete_fails_with_reasons_after_one_retry() {
    let world = World::new(NOW);
    world.stacks.seed(STACK, "CREATE_COMPLETE", None);
    world.stacks.set_behaviour(StackBehaviour {
        delete_ends_in: "DELETE_FAILED",
        failure_reasons: vec!["Vpc: has dependencies and cannot be deleted".into()],
        ..Default::default()
    });
    world.schedules.insert("destroy.ci-1.20261123T130000", at("2026-11-23T13:00:00Z"));
    let error = world.provisioner.destroy(request("ci-1"), &world.invocation("r1")).await.unwrap_err();
    assert_eq!(error.code(), "DestroyFailed");
    assert!(error.to_string().contains("DELETE_FAILED") && error.to_string().contains("has dependencies"), "{error}");
    assert_eq!(world.stacks.count(is_delete), 2);
    assert_eq!(world.schedules.all().len(), 1);
}

/// What destroy does for a stack found in each status.
#[tokio::test(start_paused = true)]
async fn destroy_handles_every_stack_status() {
    for status in KNOWN_STATUSES {
        let world = World::new(NOW);
        let then = match StackStatus::new(*status).phase() {
            StackPhase::InProgress => Some("UPDATE_COMPLETE"),
            StackPhase::Deleting => Some("DELETE_COMPLETE"),
            _ => None,
        };
        world.stacks.seed(STACK, status, then.map(|next| (Duration::from_secs(45), next)));
        let response = world.provisioner.destroy(request("ci-1"), &world.invocation("r1")).await;
        let response = response.unwrap_or_else(|e| panic!("{status}: {e}"));
        let expected = if *status == "DELETE_COMPLETE" {
            destroy::DestroyAction::AlreadyAbsent
        } else {
            destroy::DestroyAction::Deleted
        };
        assert_eq!(response.action, expected, "{status}");
        assert!(world.stacks.status(STACK).is_none(), "{status}: gone");
        let deletes = world.stacks.count(is_delete);
        let expected_deletes = match StackStatus::new(*status).phase() {
            StackPhase::Absent | StackPhase::Deleting => 0,
            _ => 1,
        };
        assert_eq!(deletes, expected_deletes, "{status}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_fired_schedule_destroys_the_cluster() {
    let world = World::new(NOW);
    world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("r1")).await.unwrap();
    world
        .provisioner
        .schedule_destroy(schedule_request("ci-1", "2026-11-23T15:00:00Z"), &world.invocation("r2"))
        .await
        .unwrap();
    let (_, input) = world.schedules.all().into_values().next().unwrap();
    let fired = ClusterRequest::parse(serde_json::from_str(&input).unwrap()).unwrap();
    let response = world.provisioner.destroy(fired, &world.invocation("r3")).await.unwrap();
    assert_eq!(response.action, destroy::DestroyAction::Deleted);
    assert!(world.schedules.all().is_empty());
    assert!(world.stacks.status(STACK).is_none());
}

#[test]
fn errors_say_what_to_do() {
    let error = Error::UnknownCluster("other".into());
    assert!(error.to_string().contains("catalog"));
}

/// Before the stack goes, each instance copies its containers' logs to its own folder of this
/// destroy (Run Command), and the answer says where; what goes wrong is a note, never a failure,
/// and the wait for the copies is at most 60 seconds.
#[tokio::test(start_paused = true)]
async fn destroy_keeps_the_clusters_logs_first_and_says_where_or_why_not() {
    use crate::testing::Copying;
    let world = World::new(NOW);
    world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("d1")).await.unwrap();
    world.logs.set_instances(STACK, &["i-0aaa", "i-0bbb"]);
    world.faults.take_calls();
    let done = world.provisioner.destroy(request("ci-1"), &world.invocation("x1")).await.unwrap();
    let location = done.logs.clone().expect("logs were kept");
    assert!(location.starts_with("s3://sliderule-provisioner-runs/clusters/ci-1/2026"), "{location}");
    assert_eq!(done.logs_note, None, "exactly one of logs and logs_note");
    let sent = world.logs.sent();
    assert_eq!(
        sent,
        [("i-0aaa".into(), format!("{location}i-0aaa/")), ("i-0bbb".into(), format!("{location}i-0bbb/"))]
    );
    let calls = world.faults.take_calls();
    let position = |name: &str| calls.iter().position(|c| *c == name).unwrap_or_else(|| panic!("{name}: {calls:?}"));
    assert!(position("SendCommand") < position("DeleteStack"), "the logs go first: {calls:?}");

    // Copies that never end hold the destroy 60 seconds, no more; the note says why.
    for (copying, why) in [
        (Copying::Hangs, "not done in 60 s"),
        (Copying::Fails, "exit status 1"),
        (Copying::Refused, "InvalidInstanceId"),
    ] {
        world.provisioner.deploy(deploy_request("ci-1"), &world.invocation("d2")).await.unwrap();
        world.logs.set_copying(copying);
        let before = world.clock.now();
        let done = world.provisioner.destroy(request("ci-1"), &world.invocation("x2")).await.unwrap();
        let took = world.clock.now().duration_since(before);
        assert_eq!(done.logs, None, "{copying:?}");
        assert!(done.logs_note.as_deref().unwrap().contains(why), "{copying:?}: {:?}", done.logs_note);
        assert!(took < SignedDuration::from_secs(60 + 75), "{copying:?}: {took:?}");
        assert_eq!(world.stacks.status(STACK), None, "destroyed all the same");
    }
    // No cluster, no logs.
    let none = world.provisioner.destroy(request("ci-1"), &world.invocation("x3")).await.unwrap();
    assert_eq!((none.logs, none.logs_note.as_deref()), (None, Some("there was no cluster")));
}
