//! Prints, as JSON, the shipped plan of a run kind (`test` or `build`, the first argument): its
//! rendered script for a sample run (booted from a runner image when the second argument is
//! `image`), its parallelism, and each step with what it needs and whether the image holds it.
//! `make bench` plays the script in the sandbox to time the steps side by side.

use provisioner_core::catalog::Catalog;
use provisioner_core::domain::{ClusterName, GitRef, RunId, RunKind};
use provisioner_core::instance::plan::ImageRole;
use provisioner_core::instance::{render, RunValues, CHECKOUT_STEP};
use provisioner_core::settings::RunSettings;

fn main() {
    let kind = match std::env::args().nth(1).as_deref() {
        Some("build") => RunKind::Build,
        _ => RunKind::Test,
    };
    let from_image = std::env::args().nth(2).as_deref() == Some("image");
    let catalog = Catalog::shipped().expect("the shipped catalog loads");
    let plans = catalog.plans();
    let plan = plans.of(kind);
    let values = RunValues {
        run_id: RunId::parse(&format!("{}ci-bench-20261202t120000-be01", kind.id_prefix())).expect("a valid run id"),
        kind,
        cluster: ClusterName::parse("ci-bench").expect("a valid name"),
        version: GitRef::parse("main").expect("a valid ref"),
        image_tag: "unstable".into(),
        attempt: 1,
        time_limit_minutes: 180,
        hold_minutes: 0,
        runner_image: from_image.then(|| "ami-0123456789abcdef0".to_owned()),
        settings: RunSettings {
            region: "us-east-1".into(),
            table: "sliderule-provisioner".into(),
            log_bucket: "sliderule-provisioner-runs".into(),
            repository: "https://github.com/SlideRuleEarth/sliderule.git".into(),
            build_image: "123456789012.dkr.ecr.us-east-1.amazonaws.com/sliderule-buildenv:latest".into(),
            registry: "123456789012.dkr.ecr.us-east-1.amazonaws.com".into(),
            domain: "slideruleearth.io".into(),
            project_bucket: "sliderule".into(),
            project_folder: "cf".into(),
            github_token_secret: None,
            step_role_arn: None,
            test_instance_profile: None,
            build_instance_profile: None,
            subnets: Vec::new(),
            security_groups: Vec::new(),
            runner_roles: Default::default(),
        },
    };
    let script = render(plan, &plans.layouts, &values).expect("the plan renders");
    let mut steps = vec![serde_json::json!({"name": CHECKOUT_STEP, "needs": []})];
    steps.extend(plan.steps.iter().map(|step| {
        let needs: Vec<&str> = std::iter::once(CHECKOUT_STEP).chain(step.needs.iter().map(String::as_str)).collect();
        let held = from_image && step.image == Some(ImageRole::Holds);
        serde_json::json!({"name": step.name, "needs": needs, "component": step.component, "held": held})
    }));
    let answer =
        serde_json::json!({"kind": kind.as_str(), "parallelism": plan.parallelism, "steps": steps, "script": script});
    println!("{answer}");
}
