//! RUNNER_IMAGE on fakes with paused time: the run makes an image of its instance once its steps
//! passed, TEST launches from the newest usable one and passes what it holds at once, and the
//! sweeper retires old images but never one an active run uses.

use jiff::SignedDuration;

use crate::domain::runner_image::{image_tags, ImageHolds};
use crate::domain::{ClusterName, GitRef};
use crate::domain::{RunId, RunKind, RunRequest, RunState, RunnerImage, RunnerImageRequest, StepStatus};
use crate::ports::Clock;
use crate::service::sweeper::SweepAction;
use crate::testing::{OpsWorld, RunWorld};

const NOW: &str = "2026-12-03T12:00:00Z";

fn make_image(wait: u64) -> RunnerImageRequest {
    RunnerImageRequest::Start { architecture: None, wait_seconds: Some(wait), requested_by: None }
}

fn resume(run_id: &RunId, wait: u64) -> RunnerImageRequest {
    RunnerImageRequest::Resume { run_id: run_id.clone(), wait_seconds: Some(wait) }
}

fn test_run(cluster: &str) -> RunRequest {
    RunRequest::Start {
        cluster: ClusterName::parse(cluster).unwrap(),
        version: GitRef::parse("main").unwrap(),
        wait_seconds: Some(0),
        hold_minutes: 0,
        requested_by: None,
    }
}

/// An available arm64 runner image of the plan of `hash`, made `age_days` ago by an earlier run.
fn made(world: &RunWorld, id: &str, hash: &str, age_days: i64) -> RunnerImage {
    let now = world.clock.now();
    let run_id = RunId::parse("image-ci-runner-image-20261101t120000-ab12").unwrap();
    let build_image = &world.runner.settings.build_image;
    let tags = image_tags("arm64", hash, build_image, &run_id, now).into_iter().collect();
    let created = now - SignedDuration::from_hours(24 * age_days);
    RunnerImage::from_tags(id.into(), "available".into(), Some(created), &tags, vec![format!("snap-{id}")]).unwrap()
}

/// Starts the image run and has its instance report every step passed.
async fn image_run_passed(world: &RunWorld) -> RunId {
    let started = world.runner.runner_image(make_image(0), &world.invocation("i1")).await.unwrap();
    let passed: Vec<(&str, StepStatus)> = started.steps.iter().map(|s| (s.name.as_str(), StepStatus::Passed)).collect();
    world.runs.report(&started.run_id, &passed, Some("succeeded"));
    started.run.run_id
}

#[tokio::test(start_paused = true)]
async fn the_image_run_images_its_instance_once_its_steps_passed_then_terminates_it() {
    let world = RunWorld::new(NOW);
    world.instances.set_images_pending(true);
    let started = world.runner.runner_image(make_image(0), &world.invocation("i1")).await.unwrap();
    assert!(started.run_id.as_str().starts_with("image-ci-runner-image-20261203t120000-"), "{}", started.run_id);
    let steps: Vec<&str> = started.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        steps,
        [
            "checkout",
            "install-tools",
            "ecr-login",
            "pull-build-environment",
            "cache-python-environment",
            "cache-browsers"
        ]
    );
    let script = world.instances.launches()[0].user_data.script();
    assert!(script.contains("KIND='runner_image'") && !script.contains("debug-build"), "only the image's steps");
    // Starting it again answers the active run.
    let again = world.runner.runner_image(make_image(0), &world.invocation("i2")).await.unwrap();
    assert_eq!((again.run_id.clone(), world.instances.launches().len()), (started.run_id.clone(), 1));

    let passed: Vec<(&str, StepStatus)> = started.steps.iter().map(|s| (s.name.as_str(), StepStatus::Passed)).collect();
    let digest = format!("sha256:{}", "5e".repeat(32));
    let holds = ImageHolds::checked(Some(digest.clone()), Some("git=2.47.1 docker=25.0.5".into()));
    world.runs.report_holds(&started.run_id, holds.clone());
    world.runs.report(&started.run_id, &passed, Some("succeeded"));
    let imaging = world.runner.runner_image(resume(&started.run_id, 30), &world.invocation("i3")).await.unwrap();
    assert_eq!(imaging.status, "running", "the image is being made");
    assert!(world.instances.terminated().is_empty(), "the instance stays until its image is available");
    let images = world.instances.images();
    let image = images.values().next().unwrap();
    assert_eq!((image.architecture.as_str(), image.run_id.as_ref()), ("arm64", Some(&started.run_id)));
    assert_eq!(image.plan_hash, world.runner.catalog.plans().runner_image.hash());
    assert_eq!(image.holds, holds, "the image records what its run said it holds");

    world.instances.set_images_pending(false);
    let done = world.runner.runner_image(resume(&started.run_id, 60), &world.invocation("i4")).await.unwrap();
    assert_eq!((done.status, done.state), ("success", RunState::Succeeded));
    assert_eq!(done.image_id.as_deref(), Some(image.id.as_str()));
    assert_eq!(world.instances.terminated(), vec![started.run.instance_id.unwrap()]);
    assert_eq!(world.instances.images().len(), 1, "one image, whatever the number of looks");
}

#[tokio::test(start_paused = true)]
async fn an_image_run_whose_step_failed_makes_no_image() {
    let world = RunWorld::new(NOW);
    let started = world.runner.runner_image(make_image(0), &world.invocation("i1")).await.unwrap();
    world.runs.report(
        &started.run_id,
        &[("checkout", StepStatus::Passed), ("install-tools", StepStatus::Failed)],
        Some("failed"),
    );
    let error = world.runner.runner_image(resume(&started.run_id, 60), &world.invocation("i2")).await.unwrap_err();
    assert_eq!(error.code(), "BuildFailed");
    assert!(error.to_string().contains("install-tools"), "{error}");
    assert!(world.instances.images().is_empty());
    assert_eq!(world.instances.terminated().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_architecture_no_test_run_uses_is_refused() {
    let world = RunWorld::new(NOW);
    let request =
        RunnerImageRequest::Start { architecture: Some("x86_64".into()), wait_seconds: None, requested_by: None };
    let error = world.runner.runner_image(request, &world.invocation("i1")).await.unwrap_err();
    assert_eq!(error.code(), "InvalidRequest");
    assert!(error.to_string().contains("use arm64"), "{error}");
    assert!(world.instances.launches().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_test_run_launches_from_the_image_and_passes_what_it_holds_at_once() {
    let world = RunWorld::new(NOW);
    // Without an image: the plain AMI, every step installed.
    let plain = world.runner.run(RunKind::Test, test_run("ci-1"), &world.invocation("t1")).await.unwrap();
    assert_eq!(
        (world.instances.launches()[0].image_id.as_str(), plain.runner_image.as_deref()),
        ("ami-al2023-arm64", None)
    );
    let plain_script = world.instances.launches()[0].user_data.script();
    assert!(plain_script.contains("dnf install -y -q git make rsync docker nodejs20"));
    assert!(!plain_script.contains("cache-browsers"), "a TEST run leaves out the image's own steps");

    let image_run = image_run_passed(&world).await;
    world.runner.runner_image(resume(&image_run, 0), &world.invocation("i2")).await.unwrap();
    let made = world.runner.runner_image(resume(&image_run, 60), &world.invocation("i3")).await.unwrap();
    let image_id = made.image_id.unwrap();

    let from_image = world.runner.run(RunKind::Test, test_run("ci-2"), &world.invocation("t2")).await.unwrap();
    assert_eq!(from_image.runner_image.as_deref(), Some(image_id.as_str()));
    let launch = world.instances.launches().last().cloned().unwrap();
    assert_eq!(launch.image_id, image_id);
    let script = launch.user_data.script();
    // Held, with its check, and the step itself should the check fail; never a registry login
    // nor the build environment, which every run does again.
    assert!(script.contains("held_step 'install-tools' 'for tool in git make docker node"), "{script}");
    assert!(script.contains("dnf install -y -q git make rsync docker nodejs20"), "run when the check fails");
    for again in ["ecr-login", "pull-build-environment"] {
        assert!(!script.contains(&format!("held_step '{again}'")), "{again}");
        assert!(script.contains(&format!("run_step '{again}'")), "{again}");
    }
    assert!(script.contains("RUNNER_IMAGE='ami-"));

    // BUILD never launches from it.
    world.runner.run(RunKind::Build, test_run("ci-3"), &world.invocation("b1")).await.unwrap();
    assert_eq!(world.instances.launches().last().unwrap().image_id, "ami-al2023-arm64");
}

#[tokio::test(start_paused = true)]
async fn a_test_run_skips_images_too_old_or_of_another_plan() {
    let world = RunWorld::new(NOW);
    let hash = world.runner.catalog.plans().runner_image.hash();
    let image = |id: &str, hash: &str, age_days: i64| made(&world, id, hash, age_days);
    world.instances.put_image(image("ami-0000000000000000a", &hash, 15));
    world.instances.put_image(image("ami-0000000000000000b", "0000000000000000", 1));
    let run = world.runner.run(RunKind::Test, test_run("ci-1"), &world.invocation("t1")).await.unwrap();
    assert_eq!(run.runner_image, None, "15 days is past the shipped 14, and the other is of another plan");
    world.instances.put_image(image("ami-0000000000000000c", &hash, 13));
    let run = world.runner.run(RunKind::Test, test_run("ci-2"), &world.invocation("t2")).await.unwrap();
    assert_eq!(run.runner_image.as_deref(), Some("ami-0000000000000000c"));
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_retires_all_but_the_newest_two_images_and_never_one_in_use() {
    let ops = OpsWorld::new(NOW);
    let world = &ops.runs;
    let now = world.clock.now();
    let hash = world.runner.catalog.plans().runner_image.hash();
    let images = [
        ("ami-00000000000000001", 40),
        ("ami-00000000000000002", 30),
        ("ami-00000000000000003", 20),
        ("ami-00000000000000004", 10),
    ];
    for (id, age_days) in images {
        world.instances.put_image(made(world, id, &hash, age_days));
    }
    // A run launched from the oldest image is still active (beyond the newest two, so only the
    // in-use rule keeps it); the second oldest is nobody's.
    let mut active = crate::testing::contract::run_record(RunKind::Test, "ci-1", "main", now);
    active.runner_image = Some("ami-00000000000000001".into());
    active.state = RunState::Running;
    world.runs.put(active);
    let swept = ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap();
    let retired: Vec<&str> = swept
        .actions
        .iter()
        .filter(|a| a.finding.action == SweepAction::RetireImage)
        .map(|a| a.finding.target.as_str())
        .collect();
    assert_eq!(retired, ["ami-00000000000000002"]);
    let left: Vec<String> = world.instances.images().into_keys().collect();
    assert_eq!(left, ["ami-00000000000000001", "ami-00000000000000003", "ami-00000000000000004"]);
    let again = ops.operations.sweep(&ops.world.invocation("s2")).await.unwrap();
    assert!(again.actions.iter().all(|a| a.finding.action != SweepAction::RetireImage));
}

#[tokio::test(start_paused = true)]
async fn the_fake_ec2_keeps_the_instances_contract_runner_images_included() {
    let world = RunWorld::new(NOW);
    let run_id = RunId::parse("test-ci-1-20261203t120000-ab12").unwrap();
    crate::testing::contract::instances(&*world.instances, &run_id).await;
}

/// Status says what each image holds (the steps a TEST run passes at once once checked), the
/// build environment its run pulled, and how the last refresh ended.
#[tokio::test(start_paused = true)]
async fn status_shows_what_each_image_holds_and_the_last_refresh() {
    let ops = OpsWorld::new(NOW);
    let world = &ops.runs;
    let hash = world.runner.catalog.plans().runner_image.hash();
    world.instances.put_image(made(world, "ami-0000000000000000a", &hash, 3));
    world.instances.put_image(made(world, "ami-0000000000000000b", "0000000000000000", 2));
    let mut refresh =
        crate::testing::contract::run_record(RunKind::RunnerImage, "ci-runner-image", "main", world.clock.now());
    refresh.state = RunState::Failed;
    refresh.failure = Some("steps failed: cache-browsers".into());
    world.runs.put(refresh.clone());
    let status = serde_json::to_value(ops.operations.status().await.unwrap()).unwrap();
    let images = status["runner_images"].as_array().unwrap();
    let current = images.iter().find(|i| i["image_id"] == "ami-0000000000000000a").unwrap();
    assert_eq!(current["holds"], serde_json::json!(["install-tools"]), "{current:#}");
    assert_eq!(current["build_image"], world.runner.settings.build_image.as_str());
    let other = images.iter().find(|i| i["image_id"] == "ami-0000000000000000b").unwrap();
    assert_eq!(other["holds"], serde_json::json!([]), "another plan's image holds nothing a run trusts");
    let last = &status["last_image_refresh"];
    assert_eq!((last["run_id"].as_str(), last["state"].as_str()), (Some(refresh.run_id.as_str()), Some("failed")));
    assert_eq!(last["failure"], "steps failed: cache-browsers");
}
