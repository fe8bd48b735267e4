//! The user-data scripts of TEST and BUILD runs: linted with shellcheck, then executed in a
//! sandbox (a temporary directory, stub commands on PATH that record their arguments, a fixture
//! checkout of each repository layout, and the real AWS CLI reporting to the local AWS emulator).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use provisioner_core::catalog::Catalog;
use provisioner_core::domain::test_results::StepTests;
use provisioner_core::domain::{ClusterName, GitRef, ImageTag, RunId, RunKind};
use provisioner_core::instance::{render, Layout, Plan, RunValues, Step, StepPlace};
use provisioner_core::settings::RunSettings;
use provisioner_core::table::{report, run};
use provisioner_e2e::{aws_cli, emulator, repo_root, s3, shellcheck, unique, Sandbox};

const REGISTRY: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
/// A registry in a region where nothing was ever pushed.
const EMPTY_REGISTRY: &str = "123456789012.dkr.ecr.eu-north-1.amazonaws.com";
const PROJECT_FOLDER: &str = "cf";

fn values(table: &str, bucket: &str, kind: RunKind, version: &str) -> RunValues {
    RunValues {
        run_id: RunId::parse(&unique(&format!("{}ci-1-", kind.id_prefix()))).unwrap(),
        kind,
        cluster: ClusterName::parse("ci-1").unwrap(),
        version: GitRef::parse(version).unwrap(),
        image_tag: ImageTag::for_version(&GitRef::parse(version).unwrap()).map(|t| t.to_string()).unwrap_or_default(),
        attempt: 1,
        time_limit_minutes: 90,
        hold_minutes: 0,
        runner_image: None,
        settings: RunSettings {
            region: "us-east-1".into(),
            table: table.into(),
            log_bucket: bucket.into(),
            repository: "https://github.com/SlideRuleEarth/sliderule.git".into(),
            build_image: format!("{REGISTRY}/sliderule-buildenv:latest"),
            registry: REGISTRY.into(),
            domain: "slideruleearth.io".into(),
            project_bucket: bucket.into(),
            project_folder: PROJECT_FOLDER.into(),
            github_token_secret: None,
            step_role_arn: None,
            test_instance_profile: None,
            build_instance_profile: None,
            subnets: Vec::new(),
            security_groups: Vec::new(),
            runner_roles: Default::default(),
        },
    }
}

fn sandbox() -> Sandbox {
    Sandbox::new("provisioner-sandbox-")
}

/// A sandbox whose `git clone` copies a fixture checkout of `layout`.
fn sandbox_with_layout(layout: &str) -> Sandbox {
    let sandbox = sandbox();
    let written = Command::new(repo_root().join("tools/sandbox/fixture-repo"))
        .arg(layout)
        .arg(sandbox.dir.join("fixture"))
        .env("SANDBOX", &sandbox.dir)
        .status()
        .unwrap();
    assert!(written.success(), "fixture of layout {layout} written");
    sandbox
}

/// What a run's script does in a sandbox: where it checks out, where it ran what, its logs.
trait RunSandbox {
    fn repo(&self) -> PathBuf;
    /// (directory relative to the checkout, call) of every stub call made inside the checkout.
    fn calls_where(&self) -> Vec<(String, String)>;
    /// (directory relative to the checkout, target) of every fixture make target that ran.
    fn targets(&self) -> Vec<(String, String)>;
    fn command(&self, script: &str) -> Command;
    fn run(&self, script: &str);
    fn log(&self, step: &str) -> String;
}

impl RunSandbox for Sandbox {
    fn repo(&self) -> PathBuf {
        self.dir.join("work/sliderule")
    }

    fn calls_where(&self) -> Vec<(String, String)> {
        let repo = self.repo().display().to_string();
        self.lines("calls-where.log")
            .into_iter()
            .filter_map(|line| {
                let (dir, call) = line.split_once('\t')?;
                let relative = dir.strip_prefix(&repo)?.trim_start_matches('/').to_owned();
                Some((relative, call.to_owned()))
            })
            .collect()
    }

    fn targets(&self) -> Vec<(String, String)> {
        let repo = self.repo().display().to_string();
        self.lines("targets.log")
            .into_iter()
            .map(|line| {
                let mut words = line.split(' ');
                let dir = words.next().unwrap_or("");
                let target = words.next().unwrap_or("");
                (dir.strip_prefix(&repo).unwrap_or(dir).trim_start_matches('/').to_owned(), target.to_owned())
            })
            .collect()
    }

    fn command(&self, script: &str) -> Command {
        let mut command = self.bash(script);
        command
            .env("PROVISIONER_WORK_DIR", self.dir.join("work"))
            .env("PROVISIONER_DATA_DIR", self.dir.join("data"))
            .env("PROVISIONER_DISCOVERY_TIMEOUT_SECONDS", "0")
            .env("PROVISIONER_CALLER_ID", SANDBOX_CALLER)
            // The sandbox's own user stands in for the step user (the sandbox makes no user).
            .env("PROVISIONER_STEP_USER", sandbox_user())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    fn run(&self, script: &str) {
        let output = self.command(script).output().unwrap();
        assert!(output.status.success(), "script failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    fn log(&self, step: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("work/logs/{step}.log"))).unwrap_or_default()
    }
}

/// A table and a bucket of this test's own (run logs, and the project's data folders), the
/// build environment in the registry, and a run record with every step pending.
async fn run_record(values: &RunValues, steps: &[String]) -> aws_sdk_dynamodb::Client {
    let config = emulator().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    provisioner_e2e::create_table(&dynamodb, &values.settings.table).await;
    s3::create_bucket(&values.settings.log_bucket);
    for key in ["server/GeoLite2-City.mmdb", "ams/ATL13/atl13.db"] {
        s3::put(&values.settings.log_bucket, &format!("{PROJECT_FOLDER}/{key}"), "data");
    }
    push_image("sliderule-buildenv", "latest").await;
    let pending: HashMap<String, AttributeValue> = steps
        .iter()
        .map(|s| {
            (s.clone(), AttributeValue::M(HashMap::from([("status".to_owned(), AttributeValue::S("pending".into()))])))
        })
        .collect();
    dynamodb
        .put_item()
        .table_name(&values.settings.table)
        .item(provisioner_core::table::KEY, AttributeValue::S(format!("{}{}", run::PREFIX, values.run_id)))
        .item(run::STEPS, AttributeValue::M(pending))
        // The instance writes only while its attempt is the run's current one and the run is active.
        .item(run::ATTEMPT, AttributeValue::N(values.attempt.to_string()))
        .item(run::STATE, AttributeValue::S("running".into()))
        .send()
        .await
        .unwrap();
    dynamodb
}

async fn push_image(repository: &str, tag: &str) {
    let manifest = format!(
        concat!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","#,
            r#""config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"#,
            r#""digest":"sha256:{}"}},"layers":[]}}"#
        ),
        "0".repeat(64)
    );
    // Through the SDK: the sandbox's AWS CLI calls are what the tests measure, not their fixtures.
    let ecr = aws_sdk_ecr::Client::new(&emulator().await);
    // Either may exist already (another test pushed it): what matters is that it is there after.
    let _ = ecr.create_repository().repository_name(repository).send().await;
    let _ = ecr.put_image().repository_name(repository).image_tag(tag).image_manifest(manifest).send().await;
    assert!(registry_has(repository, tag).await, "{repository}:{tag} pushed");
}

async fn registry_has(repository: &str, tag: &str) -> bool {
    let ecr = aws_sdk_ecr::Client::new(&emulator().await);
    let image = aws_sdk_ecr::types::ImageIdentifier::builder().image_tag(tag).build();
    ecr.describe_images().repository_name(repository).image_ids(image).send().await.is_ok()
}

/// The caller id the sandbox's instance reports under (an instance role's session: ROLE-ID:INSTANCE-ID).
const SANDBOX_CALLER: &str = "AROASANDBOXRUNNER:i-0123456789abcdef0";

/// The user the sandbox runs as: the step user of its scripts.
fn sandbox_user() -> String {
    let output = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// What the sandbox's instance reported: its own report item.
async fn record(dynamodb: &aws_sdk_dynamodb::Client, values: &RunValues) -> HashMap<String, AttributeValue> {
    item(dynamodb, values, &format!("{}{SANDBOX_CALLER}", report::PREFIX)).await.expect("the instance reported")
}

async fn item(
    dynamodb: &aws_sdk_dynamodb::Client,
    values: &RunValues,
    key: &str,
) -> Option<HashMap<String, AttributeValue>> {
    let item = dynamodb
        .get_item()
        .table_name(&values.settings.table)
        .key(provisioner_core::table::KEY, AttributeValue::S(key.to_owned()))
        .send()
        .await
        .unwrap();
    item.item().cloned()
}

fn step_field(record: &HashMap<String, AttributeValue>, field: &str) -> HashMap<String, String> {
    record[run::STEPS]
        .as_m()
        .unwrap()
        .iter()
        .filter_map(|(name, step)| Some((name.clone(), step.as_m().unwrap().get(field)?.as_s().ok()?.clone())))
        .collect()
}

fn step_statuses(record: &HashMap<String, AttributeValue>) -> HashMap<String, String> {
    step_field(record, "status")
}

fn text<'a>(record: &'a HashMap<String, AttributeValue>, key: &str) -> &'a str {
    record.get(key).and_then(|v| v.as_s().ok()).map(String::as_str).unwrap_or("")
}

fn layouts() -> Vec<Layout> {
    Catalog::shipped().unwrap().plans().layouts.clone()
}

fn test_plan() -> Plan {
    let step = Step::command;
    Plan {
        parallelism: 1,
        steps: vec![
            step("conda-environment", "conda env create --name sliderule_env", StepPlace::Host, &[]),
            step(
                "python-client-pytests",
                r#"conda run --name sliderule_env pytest --domain "$DOMAIN" --organization "$ORGANIZATION""#,
                StepPlace::Host,
                &["conda-environment"],
            ),
            step("nodejs-client-jests", "npm test", StepPlace::Host, &[]),
            step("debug-build", "make config-debug", StepPlace::Container, &[]),
            step("lua-selftests", "make selftest", StepPlace::Container, &["debug-build"]),
            step("manager-pytests", "make manager-test", StepPlace::Container, &[]),
        ],
    }
}

fn position(calls: &[String], prefix: &str) -> usize {
    calls
        .iter()
        .position(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no call starting with {prefix:?}: {calls:?}"))
}

#[test]
fn the_scripts_of_the_shipped_plans_pass_shellcheck() {
    let catalog = Catalog::shipped().unwrap();
    let mut test_values = values("t", "b", RunKind::Test, "main");
    test_values.settings.github_token_secret = Some("ci/github-token".into());
    let test = render(&catalog.plans().test, &layouts(), &test_values).unwrap();
    let build = render(&catalog.plans().build, &layouts(), &values("t", "b", RunKind::Build, "v4.5.1")).unwrap();
    shellcheck(&test, "test-user-data-");
    shellcheck(&build, "build-user-data-");
    shellcheck(
        &render(&test_plan(), &layouts(), &values("t", "b", RunKind::Test, "main")).unwrap(),
        "sandbox-user-data-",
    );
    // Each step's commands as the step runs them.
    for step in catalog.plans().test.steps.iter().chain(&catalog.plans().build.steps) {
        shellcheck(&format!("#!/bin/bash\nset -euo pipefail\n{}", step.run), &format!("step-{}-", step.name));
    }
}

/// What a TEST run of the shipped plan on a fixture of `layout` did.
struct TestRun {
    sandbox: Sandbox,
    record: HashMap<String, AttributeValue>,
    user_data: String,
    logs: Vec<String>,
}

const FAKE_TOKEN: &str = "ghp_FAKEtoken0123456789abcdefNEVERLOGGED";
const STEP_ROLE: &str = "arn:aws:iam::123456789012:role/sliderule-provisioner-test-step";

async fn run_shipped_test_plan(layout: &str) -> TestRun {
    let secret_name = unique("ci/github-token-");
    let created = aws_cli(&["secretsmanager", "create-secret", "--name", &secret_name, "--secret-string", FAKE_TOKEN]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let mut values = values(&unique("runs-"), &unique("logs-"), RunKind::Test, "main");
    values.settings.github_token_secret = Some(secret_name);
    values.settings.step_role_arn = Some(STEP_ROLE.into());
    let catalog = Catalog::shipped().unwrap();
    let plan = &catalog.plans().test;
    let dynamodb = run_record(&values, &plan.step_names()).await;
    let sandbox = sandbox_with_layout(layout);
    let user_data = render(plan, &layouts(), &values).unwrap();
    sandbox.run(&user_data);
    let record = record(&dynamodb, &values).await;
    let logs = s3::texts(&values.settings.log_bucket, &format!("runs/{SANDBOX_CALLER}/")).into_values().collect();
    TestRun { sandbox, record, user_data, logs }
}

/// The checks every layout's TEST run passes; `not_applicable` names the steps its version lacks.
async fn a_test_run_on_layout(layout: &str, server: &str, ams: &str, not_applicable: &[&str]) {
    let run = run_shipped_test_plan(layout).await;
    let sandbox = &run.sandbox;
    let statuses = step_statuses(&run.record);
    let reasons = step_field(&run.record, "reason");
    assert_eq!(text(&run.record, run::LAYOUT), layout, "the layout is detected from the checkout");
    for (step, status) in &statuses {
        let expected = if not_applicable.contains(&step.as_str()) { "not_applicable" } else { "passed" };
        assert_eq!(status, expected, "{step} on layout {layout}: {statuses:?}; log: {}", sandbox.log(step));
        if status == "not_applicable" {
            assert!(reasons.get(step).is_some_and(|r| !r.is_empty()), "{step} says why: {reasons:?}");
        }
    }
    assert_eq!(text(&run.record, run::OUTCOME), "succeeded", "not-applicable steps neither fail nor pass the run");

    // Each suite's own report is read per test (the stubbed suites pass two tests each) and
    // uploaded beside the step's log.
    let tests = step_field(&run.record, run::STEP_TESTS);
    let catalog = Catalog::shipped().unwrap();
    for step in catalog.plans().test.steps.iter().filter(|step| step.results.is_some()) {
        if not_applicable.contains(&step.name.as_str()) {
            assert!(!tests.contains_key(&step.name), "{}: {tests:?}", step.name);
            continue;
        }
        let read: serde_json::Value = serde_json::from_str(&tests[&step.name]).unwrap();
        assert_eq!((read["passed"].as_u64(), read["failed"].as_u64()), (Some(2), Some(0)), "{}: {read}", step.name);
    }
    assert!(
        run.logs.iter().any(|log| log.starts_with("<?xml") && log.contains("<testcase")),
        "a JUnit report uploaded"
    );
    if !not_applicable.contains(&"nodejs-client-jests") {
        assert!(run.logs.iter().any(|log| log.contains("\"testResults\"")), "jest's report uploaded");
    }

    // The debug build and the selftests in the layout's server make directory, never at the root.
    let targets = sandbox.targets();
    for target in ["config-debug", "all", "selftest"] {
        assert!(targets.contains(&(server.to_owned(), target.to_owned())), "{target} in {server}: {targets:?}");
    }
    assert!(targets.iter().all(|(dir, _)| !dir.is_empty()), "nothing ran at the repository root: {targets:?}");
    let debug = targets.iter().position(|t| t.1 == "config-debug").unwrap();
    assert!(debug < targets.iter().position(|t| t.1 == "all").unwrap(), "configure, then build: {targets:?}");

    // The container has the repository at the same path, and the data.
    let calls = sandbox.calls();
    let repo = sandbox.repo().display().to_string();
    let container = calls.iter().find(|c| c.starts_with("docker run")).expect("a container step");
    assert!(container.contains(&format!("-v {repo}:{repo} ")), "{container}");
    assert!(container.contains(&format!("-v {}:/data ", sandbox.dir.join("data").display())), "{container}");
    assert!(
        position(&calls, "docker login") < position(&calls, "docker pull"),
        "the login precedes the pull: {calls:?}"
    );

    // The repository's code runs as the step user, walled off from the metadata service before the
    // checkout; the provisioner's own steps run as root; containers on Docker's bridge network.
    let user = sandbox_user();
    let stand_in = format!("iptables -t nat -I OUTPUT -d 169.254.169.254/32 -p tcp --dport 80 -m owner --uid-owner {user} -j DNAT --to-destination 127.0.0.1:");
    let refused = format!("iptables -I OUTPUT -d 169.254.169.254/32 -m owner --uid-owner {user} -j REJECT");
    assert!(position(&calls, &stand_in) < position(&calls, "git clone"), "walled off first: {calls:?}");
    assert!(position(&calls, &refused) < position(&calls, "git clone"), "walled off first: {calls:?}");
    let as_step_user = sandbox.lines("runuser.log");
    assert!(as_step_user.iter().all(|line| line.starts_with(&format!("{user}\t"))), "{as_step_user:?}");
    for repository_code in ["conda run --no-capture-output --name ams pytest", "discovery/status"] {
        assert!(as_step_user.iter().any(|line| line.contains(repository_code)), "{repository_code}: {as_step_user:?}");
    }
    for root_command in ["dnf install", "aws s3 cp", "docker pull", "docker login", "git clone"] {
        assert!(!as_step_user.iter().any(|line| line.contains(root_command)), "{root_command}: {as_step_user:?}");
    }
    let containers: Vec<&String> = calls.iter().filter(|c| c.starts_with("docker run")).collect();
    assert!(containers.iter().all(|c| c.contains(" --user ")), "containers run as the step user: {containers:?}");
    // The stand-in metadata service answers the selftests alone: a session of the step role,
    // never the instance's credentials.
    let given: Vec<(String, String)> = sandbox
        .lines("container-credentials.log")
        .into_iter()
        .filter_map(|line| line.split_once('\t').map(|(key, call)| (key.to_owned(), call.to_owned())))
        .collect();
    for (key, call) in &given {
        let selftests = call.ends_with("make selftest");
        assert_eq!(!key.is_empty(), selftests, "credentials given to {call}: {key:?}");
        assert!(!selftests || key != "testing", "the selftests got the instance's credentials");
    }
    assert!(given.iter().any(|(_, call)| call.ends_with("make selftest")), "{given:?}");

    // The AMS pytests on the host, in the layout's AMS directory, with the project's data in place.
    let where_ = sandbox.calls_where();
    assert!(
        where_.contains(&(ams.to_owned(), "conda run --no-capture-output --name ams pytest".to_owned())),
        "{where_:?}"
    );
    assert!(sandbox.dir.join("data/ATL13/atl13.db").exists() && sandbox.dir.join("data/GeoLite2-City.mmdb").exists());

    // The GitHub token reaches the client suites alone, and nothing records it.
    let token_calls = sandbox.lines("token-calls.log");
    let client_suite_call = |c: &String| {
        c.starts_with("conda run --no-capture-output --name sliderule pytest")
            || c.starts_with("npm ci")
            || c.starts_with("npx ")
    };
    assert!(token_calls.iter().all(client_suite_call), "only the client suites get the token: {token_calls:?}");
    let mut everything = vec![run.user_data.clone(), format!("{:?}", run.record)];
    everything.extend(run.logs.iter().cloned());
    for file in ["calls.log", "calls-where.log", "token-calls.log", "targets.log"] {
        everything.push(std::fs::read_to_string(sandbox.dir.join(file)).unwrap_or_default());
    }
    for entry in std::fs::read_dir(sandbox.dir.join("work/logs")).unwrap() {
        everything.push(std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
    }
    assert!(everything.iter().all(|text| !text.contains(FAKE_TOKEN)), "the token appears somewhere");
}

/// A layout whose clients log in where this provisioner's clusters do: they run against the
/// cluster under test, with the token.
async fn the_clients_test_the_cluster_under_test(layout: &str) {
    let run = run_shipped_test_plan(layout).await;
    let sandbox = &run.sandbox;
    let where_ = sandbox.calls_where();
    let pytest = "conda run --no-capture-output --name sliderule pytest --domain slideruleearth.io --organization ci-1";
    assert!(where_.contains(&("clients/python".to_owned(), pytest.to_owned())), "{where_:?}");
    assert!(
        where_.contains(&(
            "clients/python".to_owned(),
            "conda run --no-capture-output --name sliderule pip install --quiet .".to_owned()
        )),
        "the checked-out client is installed: {where_:?}"
    );
    let configured = std::fs::read_to_string(sandbox.dir.join("nodejs-client-config.json"))
        .expect("the Node.js client was configured");
    let configured: serde_json::Value = serde_json::from_str(&configured).unwrap();
    assert_eq!(configured, serde_json::json!({"domain": "slideruleearth.io", "organization": "ci-1"}));
    let token_calls = sandbox.lines("token-calls.log");
    assert!(
        token_calls.iter().any(|c| c.contains("pytest")) && token_calls.iter().any(|c| c.starts_with("npx jest")),
        "{token_calls:?}"
    );
}

#[tokio::test]
async fn a_test_run_on_layout_a_uses_targets_slideruleearth_aws_and_has_no_provisioner() {
    let retired = ["python-environment", "python-client-pytests", "nodejs-client-jests"];
    a_test_run_on_layout(
        "A",
        "targets/slideruleearth-aws",
        "targets/slideruleearth-aws/docker/asset-metadata-service",
        &[&retired[..], &["provisioner-pytests"]].concat(),
    )
    .await;
}

#[tokio::test]
async fn a_test_run_on_layout_b_runs_the_manager_and_skips_the_retired_login() {
    let retired = ["python-environment", "python-client-pytests", "nodejs-client-jests"];
    a_test_run_on_layout(
        "B",
        "targets/slideruleearth",
        "applications/ams",
        &[&retired[..], &["provisioner-pytests"]].concat(),
    )
    .await;
}

#[tokio::test]
async fn a_test_run_on_layout_c_has_no_manager_and_tests_the_clients_against_the_cluster() {
    a_test_run_on_layout("C", "targets/slideruleearth", "applications/ams", &["manager-pytests"]).await;
    the_clients_test_the_cluster_under_test("C").await;
}

#[tokio::test]
async fn a_test_run_on_layout_d_has_no_root_makefile_and_tests_the_clients_against_the_cluster() {
    a_test_run_on_layout("D", "targets/slideruleearth", "apps/ams", &["manager-pytests"]).await;
    the_clients_test_the_cluster_under_test("D").await;
}

/// Runs the shipped plan of `values.kind` in the sandbox; answers the run's record.
async fn run_shipped_plan(values: &RunValues, sandbox: &Sandbox) -> HashMap<String, AttributeValue> {
    let catalog = Catalog::shipped().unwrap();
    let plan = catalog.plans().of(values.kind);
    let dynamodb = run_record(values, &plan.step_names()).await;
    sandbox.run(&render(plan, &layouts(), values).unwrap());
    record(&dynamodb, values).await
}

/// A BUILD run of the shipped plan on a fixture of `layout`: it builds, then pushes, in the
/// server make directory, and records exactly the images the layout's Makefile pushes.
async fn a_build_run_on_layout(layout: &str, server: &str, images: &[&str]) {
    let tag = unique("v9.");
    let values = values(&unique("runs-"), &unique("logs-"), RunKind::Build, &tag);
    let sandbox = sandbox_with_layout(layout);
    let record = run_shipped_plan(&values, &sandbox).await;
    let statuses = step_statuses(&record);
    assert!(statuses.values().all(|s| s == "passed"), "{statuses:?}; {}", sandbox.log("verify-images"));
    assert_eq!(text(&record, run::LAYOUT), layout);
    let targets = sandbox.targets();
    let expected_targets: Vec<(String, String)> =
        ["cluster-docker", "cluster-docker-push"].iter().map(|t| (server.to_owned(), t.to_string())).collect();
    assert_eq!(targets, expected_targets, "build, then push, in the server directory");
    let calls = sandbox.calls();
    for target in ["cluster-docker", "cluster-docker-push"] {
        let make = format!("make {target} VERSION={tag} CONTAINER_REGISTRY={REGISTRY} ECR={REGISTRY}");
        assert!(calls.iter().any(|c| c.starts_with(&make)), "{make}: {calls:?}");
    }
    assert!(position(&calls, "docker login") < position(&calls, "docker build"), "{calls:?}");
    let mut recorded: Vec<String> =
        record[run::IMAGES].as_l().unwrap().iter().map(|v| v.as_s().unwrap().clone()).collect::<Vec<_>>();
    recorded.sort();
    let mut expected: Vec<String> = images.iter().map(|i| format!("{REGISTRY}/{i}:{tag}")).collect();
    expected.sort();
    assert_eq!(recorded, expected, "the images the layout pushes, read back from the registry");
    for image in images {
        assert!(registry_has(image, &tag).await, "{image}:{tag} is in the registry");
    }
}

#[tokio::test]
async fn a_build_run_on_layout_a_pushes_its_six_images() {
    a_build_run_on_layout(
        "A",
        "targets/slideruleearth-aws",
        &["sliderule", "ilb", "proxy", "monitor", "manager", "ams"],
    )
    .await;
}

#[tokio::test]
async fn a_build_run_on_layout_b_pushes_its_seven_images() {
    a_build_run_on_layout(
        "B",
        "targets/slideruleearth",
        &["sliderule", "ilb", "proxy", "monitor", "monitor-agent", "manager", "ams"],
    )
    .await;
}

#[tokio::test]
async fn a_build_run_on_layouts_c_and_d_pushes_the_five_images_of_v5() {
    for layout in ["C", "D"] {
        a_build_run_on_layout(
            layout,
            "targets/slideruleearth",
            &["sliderule", "ilb", "monitor", "monitor-agent", "ams"],
        )
        .await;
    }
}

#[tokio::test]
async fn a_build_without_the_build_environment_in_the_registry_fails_saying_so_and_pushes_nothing() {
    let tag = unique("v9.");
    let mut values = values(&unique("runs-"), &unique("logs-"), RunKind::Build, &tag);
    values.settings.registry = EMPTY_REGISTRY.into();
    let sandbox = sandbox_with_layout("D");
    let record = run_shipped_plan(&values, &sandbox).await;
    let statuses = step_statuses(&record);
    assert_eq!(statuses["check-build-environment"], "failed");
    assert!(
        sandbox.log("check-build-environment").contains("has no sliderule-buildenv:latest"),
        "{}",
        sandbox.log("check-build-environment")
    );
    for step in ["build-images", "push-images", "verify-images"] {
        assert_eq!(statuses[step], "skipped", "{step}");
    }
    assert_eq!(text(&record, run::OUTCOME), "failed");
    assert!(sandbox.calls().iter().all(|c| !c.starts_with("docker push")));
}

#[tokio::test]
async fn a_cluster_that_reports_no_nodes_fails_the_wait_with_a_clear_message_and_skips_the_clients() {
    let values = values(&unique("runs-"), &unique("logs-"), RunKind::Test, "main");
    let sandbox = sandbox_with_layout("D");
    std::fs::write(sandbox.dir.join("discovery-nodes"), "0").unwrap();
    let statuses = step_statuses(&run_shipped_plan(&values, &sandbox).await);
    assert_eq!(statuses["wait-for-cluster"], "failed");
    assert!(sandbox.log("wait-for-cluster").contains("reported no nodes"), "{}", sandbox.log("wait-for-cluster"));
    assert_eq!(statuses["python-client-pytests"], "skipped");
    assert_eq!(statuses["nodejs-client-jests"], "skipped");
    assert_eq!(statuses["lua-selftests"], "passed", "independent suites still run");
}

#[tokio::test]
async fn a_checkout_that_fits_no_layout_fails_the_checkout_and_runs_nothing() {
    let values = values(&unique("runs-"), &unique("logs-"), RunKind::Test, "main");
    let sandbox = sandbox();
    let record = run_shipped_plan(&values, &sandbox).await;
    let statuses = step_statuses(&record);
    assert_eq!(statuses["checkout"], "failed");
    assert!(sandbox.log("checkout").contains("fits none of the repository layouts"), "{}", sandbox.log("checkout"));
    assert!(statuses.iter().filter(|(name, _)| *name != "checkout").all(|(_, s)| s == "skipped"), "{statuses:?}");
    assert_eq!(text(&record, run::OUTCOME), "failed");
}

#[tokio::test]
async fn a_run_arms_the_deadman_first_reports_every_step_and_powers_off() {
    let values = values(&unique("runs-"), &unique("logs-"), RunKind::Test, "release/4.x");
    let plan = test_plan();
    let dynamodb = run_record(&values, &plan.step_names()).await;
    let sandbox = sandbox_with_layout("D");
    sandbox.run(&render(&plan, &layouts(), &values).unwrap());

    let calls = sandbox.calls();
    assert_eq!(calls.first().map(String::as_str), Some("shutdown -h +90"), "the deadman comes first: {calls:?}");
    assert_eq!(calls.last().map(String::as_str), Some("shutdown -h now"), "{calls:?}");
    let clone =
        format!("git clone --quiet https://github.com/SlideRuleEarth/sliderule.git {}", sandbox.repo().display());
    assert!(calls.contains(&clone), "{calls:?}");
    assert!(calls.contains(&"git -c advice.detachedHead=false checkout --quiet release/4.x".to_owned()), "{calls:?}");
    assert!(
        calls.contains(
            &"conda run --name sliderule_env pytest --domain slideruleearth.io --organization ci-1".to_owned()
        ),
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|c| c.starts_with("docker run --rm") && c.ends_with("bash -euo pipefail -c make selftest")),
        "{calls:?}"
    );

    let record = record(&dynamodb, &values).await;
    let statuses = step_statuses(&record);
    assert!(plan.step_names().iter().all(|s| statuses[s] == "passed"), "{statuses:?}");
    assert_eq!(text(&record, run::OUTCOME), "succeeded");
    assert_eq!(text(&record, run::COMMIT), "0123456789abcdef0123456789abcdef01234567");

    let keys = s3::keys(&values.settings.log_bucket, &format!("runs/{SANDBOX_CALLER}/"));
    assert!(keys.contains(&format!("runs/{SANDBOX_CALLER}/lua-selftests.log")), "{keys:?}");
}

/// Without the wall (the firewall refused its rules), no step runs the repository's code, and the
/// provisioner's own steps, run as root, still do.
#[tokio::test]
async fn a_step_user_that_cannot_be_walled_off_runs_none_of_the_repositorys_code() {
    let values = values(&unique("runs-"), &unique("logs-"), RunKind::Test, "main");
    let step = Step::command;
    let plan = Plan::new(vec![
        Step { root: true, ..step("install-tools", "dnf install -y make", StepPlace::Host, &[]) },
        step("pytests", "conda run --name sliderule pytest", StepPlace::Host, &[]),
        step("lua-selftests", "make selftest", StepPlace::Container, &[]),
    ]);
    let dynamodb = run_record(&values, &plan.step_names()).await;
    let sandbox = sandbox_with_layout("D");
    sandbox.fail_when("iptables -t nat -I OUTPUT");
    sandbox.run(&render(&plan, &layouts(), &values).unwrap());

    let statuses = step_statuses(&record(&dynamodb, &values).await);
    assert_eq!((statuses["checkout"].as_str(), statuses["install-tools"].as_str()), ("passed", "passed"));
    for step in ["pytests", "lua-selftests"] {
        assert_eq!(statuses[step], "failed", "{step}");
        assert!(sandbox.log(step).contains("not walled off from the metadata service"), "{}", sandbox.log(step));
    }
    let calls = sandbox.calls();
    assert!(!calls.iter().any(|c| c.starts_with("conda run") || c.starts_with("docker run")), "{calls:?}");
    assert!(sandbox.lines("runuser.log").is_empty());
}

#[tokio::test]
async fn a_failing_step_fails_the_run_while_independent_steps_still_run() {
    let values = values(&unique("runs-"), &unique("logs-"), RunKind::Test, "main");
    let plan = test_plan();
    let dynamodb = run_record(&values, &plan.step_names()).await;
    let sandbox = sandbox_with_layout("D");
    sandbox.fail_when("make config-debug");
    sandbox.run(&render(&plan, &layouts(), &values).unwrap());

    let record = record(&dynamodb, &values).await;
    let statuses = step_statuses(&record);
    assert_eq!(statuses["debug-build"], "failed");
    assert_eq!(statuses["lua-selftests"], "skipped", "it needs the build");
    assert_eq!(statuses["manager-pytests"], "passed", "independent steps still run");
    assert_eq!(statuses["python-client-pytests"], "passed");
    assert_eq!(text(&record, run::OUTCOME), "failed");
    let exit_code =
        record[run::STEPS].as_m().unwrap()["debug-build"].as_m().unwrap()[run::STEP_EXIT_CODE].as_n().unwrap().clone();
    assert_eq!(exit_code, "3");
    assert_eq!(sandbox.calls().last().map(String::as_str), Some("shutdown -h now"));
}

/// A suite that fails a test fails its step, and the run reads which test from the suite's own
/// report: a pytest node id (a test of a class too), a jest file and name, a Lua selftest.
#[tokio::test]
async fn failing_tests_are_read_from_each_suites_own_report() {
    let values = values(&unique("runs-"), &unique("logs-"), RunKind::Test, "main");
    let plan = Catalog::shipped().unwrap().plans().test.clone();
    let dynamodb = run_record(&values, &plan.step_names()).await;
    let sandbox = sandbox_with_layout("D");
    let failing = [
        ("python-client-pytests", "tests/test_atl06.py::TestAlgorithm::test_gs"),
        ("nodejs-client-jests", "tests/atl06.test.js::atl06 returns elevations"),
        ("lua-selftests", "atl03_reader_unittest.lua"),
    ];
    let lines: Vec<String> = failing.iter().map(|(step, id)| format!("{step}:{id}")).collect();
    std::fs::write(sandbox.dir.join("fail-tests"), lines.join("\n") + "\n").unwrap();
    sandbox.run(&render(&plan, &layouts(), &values).unwrap());

    let record = record(&dynamodb, &values).await;
    let (statuses, tests) = (step_statuses(&record), step_field(&record, run::STEP_TESTS));
    for (step, id) in failing {
        assert_eq!(statuses[step], "failed", "{step}: {statuses:?}");
        let read: serde_json::Value = serde_json::from_str(&tests[step]).unwrap();
        assert_eq!(read["failing"], serde_json::json!([id]), "{step}: {read}");
        assert_eq!((read["passed"].as_u64(), read["failed"].as_u64()), (Some(2), Some(1)), "{step}: {read}");
    }
    assert_eq!(statuses["ams-pytests"], "passed");
    let read = StepTests::parse(&tests["ams-pytests"]).unwrap();
    assert_eq!((read.counts.passed, read.failing.len()), (2, 0));
    assert_eq!(text(&record, run::OUTCOME), "failed");
}

/// When each step started and ended, in seconds from the first start, by the lines its command
/// wrote to `$SANDBOX/timeline` (`start NAME EPOCH`, `end NAME EPOCH`).
fn timeline(sandbox: &Sandbox) -> HashMap<String, (f64, f64)> {
    let mut times: HashMap<String, (f64, f64)> = HashMap::new();
    for line in sandbox.lines("timeline") {
        let words: Vec<&str> = line.split(' ').collect();
        let (what, name, at) = (words[0], words[1].to_owned(), words[2].parse::<f64>().unwrap());
        let entry = times.entry(name).or_insert((f64::NAN, f64::NAN));
        if what == "start" {
            entry.0 = at
        } else {
            entry.1 = at
        }
    }
    let first = times.values().map(|(start, _)| *start).fold(f64::INFINITY, f64::min);
    times.into_iter().map(|(name, (start, end))| (name, (start - first, end - first))).collect()
}

/// Steps run side by side: each starts once every step it needs has ended, in the plan's order
/// among those ready, never more than the plan's parallelism at once; a failed step skips only
/// what needs it; the record keeps the plan's order.
#[tokio::test]
async fn independent_steps_run_side_by_side_up_to_the_plans_parallelism() {
    let values = values(&unique("runs-"), &unique("logs-"), RunKind::Test, "main");
    let timed = |name: &str, seconds: &str, then: &str| {
        format!(
            r#"echo "start {name} $(date +%s.%N)" >>"$SANDBOX/timeline"; sleep {seconds}; echo "end {name} $(date +%s.%N)" >>"$SANDBOX/timeline"; {then}"#
        )
    };
    let step = |name: &str, seconds: &str, then: &str, needs: &[&str]| {
        Step::command(name, &timed(name, seconds, then), StepPlace::Host, needs)
    };
    let plan = Plan {
        parallelism: 2,
        steps: vec![
            // Long enough that the others run beside it even on a busy machine, where each step's
            // reports (an AWS CLI call each) take seconds before its place frees.
            step("long", "12", "true", &[]),
            step("short", "0.3", "true", &[]),
            step("third", "0.3", "true", &[]),
            step("fails", "0.2", "exit 1", &["short"]),
            step("after-fails", "0.1", "true", &["fails"]),
            step("joins", "0.2", "true", &["long", "third"]),
        ],
    };
    let dynamodb = run_record(&values, &plan.step_names()).await;
    let sandbox = sandbox_with_layout("D");
    let started = Instant::now();
    sandbox.run(&render(&plan, &layouts(), &values).unwrap());
    let wall = started.elapsed().as_secs_f64();

    let record = record(&dynamodb, &values).await;
    let statuses = step_statuses(&record);
    let expected = [
        ("checkout", "passed"),
        ("long", "passed"),
        ("short", "passed"),
        ("third", "passed"),
        ("fails", "failed"),
        ("after-fails", "skipped"),
        ("joins", "passed"),
    ];
    for (name, status) in expected {
        assert_eq!(statuses[name], status, "{name}: {statuses:?}");
    }
    assert_eq!(text(&record, run::OUTCOME), "failed");

    let times = timeline(&sandbox);
    assert!(!times.contains_key("after-fails"), "a step that needs a failed one never runs: {times:?}");
    // Each starts only after what it needs ended.
    for (name, needs) in [("fails", &["short"][..]), ("joins", &["long", "third"])] {
        for need in needs {
            assert!(times[name].0 >= times[*need].1, "{name} started before {need} ended: {times:?}");
        }
    }
    // At most two at once, and two at once indeed: long beside short, then beside third, then fails.
    let mut edges: Vec<(f64, i32)> = times.values().flat_map(|(start, end)| [(*start, 1), (*end, -1)]).collect();
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut running, mut most) = (0, 0);
    for (_, change) in edges {
        running += change;
        most = most.max(running);
    }
    assert_eq!(most, 2, "{times:?}");
    assert!(times["third"].0 >= times["short"].1, "third waits for a free place: {times:?}");
    assert!(times["fails"].0 >= times["third"].1, "fails, ready after short, waits behind third: {times:?}");
    assert!(times["fails"].1 <= times["long"].1, "fails ran beside long: {times:?}");
    let sum: f64 = times.values().map(|(start, end)| end - start).sum();
    let critical = times["joins"].1;
    eprintln!("steps side by side: wall {wall:.2} s, steps' sum {sum:.2} s, last end {critical:.2} s");
}

/// A TEST run whose client jest suite hangs, started in a sandbox with `env`, once that step runs.
async fn run_hanging_in_jests(
    env: &[(&str, &str)],
) -> (RunValues, aws_sdk_dynamodb::Client, Sandbox, std::process::Child) {
    let values = values(&unique("runs-"), &unique("logs-"), RunKind::Test, "main");
    let plan = test_plan();
    let dynamodb = run_record(&values, &plan.step_names()).await;
    let sandbox = sandbox_with_layout("D");
    sandbox.sleep_when("npm test");
    let mut command = sandbox.command(&render(&plan, &layouts(), &values).unwrap());
    let child = command.envs(env.iter().copied()).spawn().unwrap();
    until_step_runs(&dynamodb, &values, &sandbox, "nodejs-client-jests").await;
    (values, dynamodb, sandbox, child)
}

/// Stops the whole run as a shutdown does: a TERM to its process group.
fn signal(child: &mut std::process::Child) {
    let killed = Command::new("kill").args(["-s", "TERM", "--", &format!("-{}", child.id())]).status().unwrap();
    assert!(killed.success(), "the run was signalled");
    assert!(!child.wait().unwrap().success());
}

/// A signal (the instance's shutdown: a spot reclaim, or the function terminating it) is not a
/// step failure: the running step is reported interrupted, its log uploaded, and no outcome is
/// claimed, so the function decides what follows (the next attempt).
#[tokio::test]
async fn a_script_stopped_by_a_signal_reports_its_step_interrupted_and_claims_no_outcome() {
    // Once the slow step runs, stop the whole run as a shutdown would.
    let (values, dynamodb, sandbox, mut child) = run_hanging_in_jests(&[]).await;
    signal(&mut child);

    let record = record(&dynamodb, &values).await;
    let statuses = step_statuses(&record);
    let report = std::fs::read_to_string(sandbox.dir.join("work/logs/report.log")).unwrap_or_default();
    assert_eq!(statuses["nodejs-client-jests"], "interrupted", "{statuses:?} {report}");
    assert!(!statuses.contains_key("manager-pytests"), "never ran, so never reported: {statuses:?}");
    assert!(!record.contains_key(run::OUTCOME), "no outcome is claimed");
    assert_eq!(text(&record, run::INSTANCE_STATE), "interrupted");
    let prefix = format!("runs/{SANDBOX_CALLER}/");
    let uploaded = s3::keys(&values.settings.log_bucket, &prefix);
    assert!(uploaded.contains(&format!("{prefix}nodejs-client-jests.log")), "{uploaded:?} {report}");
    assert_eq!(sandbox.calls().last().map(String::as_str), Some("shutdown -h now"));
}

/// The deadman's shutdown (a signal at or past the run's time limit) is the time limit, not a
/// spot interruption: the running step is reported interrupted, the instance says `timed_out`,
/// and no outcome is claimed, so the function ends the run `RunTimedOut` and retries nothing.
#[tokio::test]
async fn a_signal_past_the_time_limit_reports_the_run_timed_out() {
    // The limit passed at once (the instance's clock, in place of 90 minutes).
    let (values, dynamodb, _sandbox, mut child) = run_hanging_in_jests(&[("PROVISIONER_LIMIT_SECONDS", "0")]).await;
    signal(&mut child);
    let record = record(&dynamodb, &values).await;
    assert_eq!(text(&record, run::INSTANCE_STATE), "timed_out");
    assert_eq!(step_statuses(&record)["nodejs-client-jests"], "interrupted");
    assert!(!record.contains_key(run::OUTCOME), "no outcome is claimed");
}

/// A step whose job dies without saying how it ended (killed, out of memory) is failed in the
/// record, with why, not left running; what needs it is skipped and the run fails.
#[tokio::test]
async fn a_step_whose_job_dies_is_failed_in_the_record_not_left_running() {
    let values = values(&unique("runs-"), &unique("logs-"), RunKind::Test, "main");
    // The command kills its step's job: of its ancestors that are the script's forks (the same
    // command line), the one just below the script itself.
    let dies = concat!(
        r#"p=$PPID; top=$(tr '\0' ' ' </proc/$p/cmdline); forks=(); "#,
        r#"while [[ $(tr '\0' ' ' </proc/$p/cmdline) == "$top" ]]; do forks+=("$p"); p=$(ps -o ppid= -p "$p" | tr -d ' '); done; "#,
        r#"kill -KILL "${forks[-2]}"; sleep 5"#
    );
    let plan = Plan {
        parallelism: 2,
        steps: vec![
            Step::command("dies", dies, StepPlace::Host, &[]),
            Step::command("after", "true", StepPlace::Host, &["dies"]),
        ],
    };
    let dynamodb = run_record(&values, &plan.step_names()).await;
    let sandbox = sandbox_with_layout("D");
    let output = sandbox.command(&render(&plan, &layouts(), &values).unwrap()).output().unwrap();
    let record = record(&dynamodb, &values).await;
    let statuses = step_statuses(&record);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!((statuses["dies"].as_str(), statuses["after"].as_str()), ("failed", "skipped"), "{statuses:?} {stderr}");
    assert!(step_field(&record, "reason")["dies"].contains("its job ended without reporting how"), "{record:?}");
    assert_eq!(text(&record, run::OUTCOME), "failed");
}

/// On an instance booted from a runner image, a held step passes at once only when its check
/// does; when the image no longer holds what the step makes, the step runs itself, saying why.
#[tokio::test]
async fn a_held_step_whose_check_fails_runs_itself() {
    let mut values = values(&unique("runs-"), &unique("logs-"), RunKind::Test, "main");
    values.runner_image = Some("ami-0123456789abcdef0".into());
    let held = |name: &str, check: &str| Step {
        image: Some(provisioner_core::instance::ImageRole::Holds),
        held_check: Some(check.into()),
        ..Step::command(name, &format!("make {name}"), StepPlace::Host, &[])
    };
    let plan = Plan { parallelism: 1, steps: vec![held("kept", "true"), held("gone", "command -v no-such-tool")] };
    let dynamodb = run_record(&values, &plan.step_names()).await;
    let sandbox = sandbox_with_layout("D");
    sandbox.command(&render(&plan, &layouts(), &values).unwrap()).output().unwrap();
    let record = record(&dynamodb, &values).await;
    let statuses = step_statuses(&record);
    assert_eq!((statuses["kept"].as_str(), statuses["gone"].as_str()), ("passed", "passed"), "{statuses:?}");
    let reasons = step_field(&record, "reason");
    assert!(reasons.get("kept").is_some_and(|r| r.contains("holds what it makes (checked)")), "{reasons:?}");
    assert!(!reasons.contains_key("gone"), "it ran: {reasons:?}");
    let calls = sandbox.calls();
    assert!(calls.iter().any(|c| c == "make gone") && !calls.iter().any(|c| c == "make kept"), "{calls:?}");
    let report = std::fs::read_to_string(sandbox.dir.join("work/logs/report.log")).unwrap_or_default();
    assert!(
        report.contains("gone: the runner image ami-0123456789abcdef0 failed its check; running the step"),
        "{report}"
    );
}

/// The metadata service's spot interruption notice (IMDSv2): the watcher uploads the running
/// step's log and reports it interrupted within the two minutes, and the run claims no outcome.
#[tokio::test]
async fn a_spot_interruption_notice_reports_the_running_step_interrupted_with_its_log() {
    let (values, dynamodb, sandbox, mut child) =
        run_hanging_in_jests(&[("PROVISIONER_INTERRUPT_POLL_SECONDS", "1")]).await;
    let notice = r#"{"action": "terminate", "time": "2026-11-23T12:02:00Z"}"#;
    std::fs::write(sandbox.dir.join("spot-notice"), notice).unwrap();
    let noticed = Instant::now();
    while text(&record(&dynamodb, &values).await, run::INSTANCE_STATE) != "interrupted" {
        assert!(noticed.elapsed() < Duration::from_secs(30), "the notice was not reported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reported = record(&dynamodb, &values).await;
    assert_eq!(step_statuses(&reported)["nodejs-client-jests"], "interrupted");
    let prefix = format!("runs/{SANDBOX_CALLER}/");
    assert!(s3::keys(&values.settings.log_bucket, &prefix).contains(&format!("{prefix}nodejs-client-jests.log")));
    // EC2 reclaims the instance: its shutdown signals the script, which claims no outcome.
    Command::new("kill").args(["-s", "TERM", "--", &format!("-{}", child.id())]).status().unwrap();
    child.wait().unwrap();
    assert!(!record(&dynamodb, &values).await.contains_key(run::OUTCOME), "no outcome is claimed");
}

/// An instance writes its own report, naming its run and attempt, and never the run's record
/// (its role may write nothing else): the function reads the current attempt's report alone.
#[tokio::test]
async fn an_instance_reports_its_run_and_attempt_in_its_own_item_and_never_the_record() {
    let mut values = values(&unique("runs-"), &unique("logs-"), RunKind::Test, "main");
    let plan = test_plan();
    let dynamodb = run_record(&values, &plan.step_names()).await;
    values.attempt = 2;
    let sandbox = sandbox_with_layout("D");
    sandbox.run(&render(&plan, &layouts(), &values).unwrap());
    let stored = item(&dynamodb, &values, &format!("{}{}", run::PREFIX, values.run_id)).await.unwrap();
    assert!(step_statuses(&stored).values().all(|status| status == "pending"), "{:?}", step_statuses(&stored));
    assert!(!stored.contains_key(run::OUTCOME) && !stored.contains_key(run::INSTANCE_STATE));
    let reported = record(&dynamodb, &values).await;
    assert_eq!(
        (text(&reported, report::RUN_ID), reported[report::ATTEMPT].as_n().unwrap().as_str()),
        (values.run_id.as_str(), "2")
    );
    assert_eq!(text(&reported, run::OUTCOME), "succeeded");
}

/// Waits until `step` runs: reported running, and its command (so its log) started.
async fn until_step_runs(dynamodb: &aws_sdk_dynamodb::Client, values: &RunValues, sandbox: &Sandbox, step: &str) {
    let started = Instant::now();
    let log = sandbox.dir.join(format!("work/logs/{step}.log"));
    loop {
        let reported = item(dynamodb, values, &format!("{}{SANDBOX_CALLER}", report::PREFIX)).await;
        let statuses = reported.as_ref().map(step_statuses).unwrap_or_default();
        if statuses.get(step).is_some_and(|status| status == "running") && log.exists() {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{step} never started: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A running step's log reaches S3 while the step runs (every 60 s on an instance, every second
/// here), so an instance killed without a chance to report keeps what its step had logged.
#[tokio::test]
async fn a_running_steps_log_reaches_s3_while_it_runs_and_outlives_a_kill() {
    let values = values(&unique("runs-"), &unique("logs-"), RunKind::Test, "main");
    let plan = test_plan();
    let dynamodb = run_record(&values, &plan.step_names()).await;
    let sandbox = sandbox_with_layout("D");
    sandbox.sleep_when("npm test");
    let mut command = sandbox.command(&render(&plan, &layouts(), &values).unwrap());
    let mut child = command.env("PROVISIONER_LOG_UPLOAD_SECONDS", "1").spawn().unwrap();

    let (prefix, log) = (format!("runs/{SANDBOX_CALLER}/"), "nodejs-client-jests");
    let key = format!("{prefix}{log}.log");
    let started = Instant::now();
    loop {
        let reported = item(&dynamodb, &values, &format!("{}{SANDBOX_CALLER}", report::PREFIX)).await;
        let running = reported
            .as_ref()
            .map(step_statuses)
            .is_some_and(|statuses| statuses.get(log).is_some_and(|s| s == "running"));
        if running && s3::keys(&values.settings.log_bucket, &prefix).contains(&key) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the running step's log never reached S3");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A kill no trap sees, as when an instance vanishes: what was uploaded stays.
    let killed = Command::new("kill").args(["-s", "KILL", "--", &format!("-{}", child.id())]).status().unwrap();
    assert!(killed.success(), "the run was killed");
    child.wait().unwrap();
    assert_eq!(step_statuses(&record(&dynamodb, &values).await)[log], "running", "it never reported an end");
    assert!(s3::keys(&values.settings.log_bucket, &prefix).contains(&key));
}

#[test]
fn injection_attempts_in_every_field_are_refused_before_a_script_exists() {
    let marker = std::env::temp_dir().join(unique("pwned-"));
    let attack = format!("x$(touch {})", marker.display());
    assert!(ClusterName::parse(&attack).is_err());
    assert!(GitRef::parse(&attack).is_err());
    assert!(GitRef::parse(&format!("main;touch {}", marker.display())).is_err());
    assert!(RunId::parse(&attack).is_err());
    let fields: [fn(&mut RunValues, &str); 11] = [
        |v, a| v.settings.region = a.into(),
        |v, a| v.settings.table = a.into(),
        |v, a| v.settings.log_bucket = a.into(),
        |v, a| v.settings.repository = format!("https://x/{a}"),
        |v, a| v.settings.build_image = a.into(),
        |v, a| v.settings.registry = a.into(),
        |v, a| v.settings.domain = a.into(),
        |v, a| v.image_tag = a.into(),
        |v, a| v.settings.project_bucket = a.into(),
        |v, a| v.settings.project_folder = a.into(),
        |v, a| v.settings.github_token_secret = Some(a.into()),
    ];
    for spoil in fields {
        let mut spoiled = values("t", "b", RunKind::Test, "main");
        spoil(&mut spoiled, &attack);
        assert!(render(&test_plan(), &layouts(), &spoiled).is_err());
    }
    assert!(!Path::new(&marker).exists());
}
