//! The user-data scripts of TEST and BUILD runs: linted with shellcheck, then executed in a
//! sandbox (a temporary directory, stub commands on PATH that record their arguments, and the
//! real AWS CLI reporting to the local AWS emulator).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use provisioner_core::catalog::Catalog;
use provisioner_core::domain::{ClusterName, GitRef};
use provisioner_core::runner::{render, Plan, RunValues, Step, StepPlace};
use provisioner_e2e::{emulator, endpoint, repo_root, unique};

fn values(table: &str, bucket: &str, kind: &'static str, version: &str) -> RunValues {
    RunValues {
        run_id: unique(&format!("{kind}-ci-1-")),
        kind,
        cluster: ClusterName::parse("ci-1").unwrap(),
        version: GitRef::parse(version).unwrap(),
        region: "us-east-1".into(),
        table: table.into(),
        log_bucket: bucket.into(),
        repository: "https://github.com/SlideRuleEarth/sliderule.git".into(),
        build_image: "123456789012.dkr.ecr.us-east-1.amazonaws.com/sliderule-buildenv:latest".into(),
        registry: "123456789012.dkr.ecr.us-east-1.amazonaws.com".into(),
        domain: "slideruleearth.io".into(),
        time_limit_minutes: 90,
    }
}

/// A temporary directory with the stub commands of `tools/simulate-instance`. A stub fails when
/// its arguments contain a line of `fail-when`, sleeps when they contain a line of `sleep-when`,
/// and records every call.
struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = std::env::temp_dir().join(unique("provisioner-sandbox-"));
        let written = Command::new(repo_root().join("tools/simulate-instance")).arg("--stubs").arg(&dir).status().unwrap();
        assert!(written.success(), "stubs written");
        Sandbox { dir }
    }

    fn fail_when(&self, pattern: &str) {
        std::fs::write(self.dir.join("fail-when"), format!("{pattern}\n")).unwrap();
    }

    fn sleep_when(&self, pattern: &str) {
        std::fs::write(self.dir.join("sleep-when"), format!("{pattern}\n")).unwrap();
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("calls.log")).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    fn command(&self, script: &str) -> Command {
        let path = self.dir.join("user-data.sh");
        std::fs::write(&path, script).unwrap();
        let venv_bin = repo_root().join(".venv/bin");
        let mut command = Command::new("setsid");
        command
            .arg("bash")
            .arg(&path)
            .env_clear()
            .env("PATH", format!("{}:{}:/usr/bin:/bin", self.dir.join("bin").display(), venv_bin.display()))
            .env("SANDBOX", &self.dir)
            .env("PROVISIONER_WORK_DIR", self.dir.join("work"))
            .env("AWS_ENDPOINT_URL", endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    fn run(&self, script: &str) {
        let output = self.command(script).output().unwrap();
        assert!(output.status.success(), "script failed: {}", String::from_utf8_lossy(&output.stderr));
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_SANDBOX").is_some() {
            eprintln!("sandbox kept at {}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A table and a bucket of this test's own, and a run record with every step pending.
async fn run_record(values: &RunValues, steps: &[String]) -> aws_sdk_dynamodb::Client {
    let config = emulator().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    provisioner_e2e::create_table(&dynamodb, &values.table).await;
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build())
        .create_bucket()
        .bucket(&values.log_bucket)
        .send()
        .await
        .unwrap();
    let pending: HashMap<String, AttributeValue> = steps
        .iter()
        .map(|s| (s.clone(), AttributeValue::M(HashMap::from([("status".to_owned(), AttributeValue::S("pending".into()))]))))
        .collect();
    dynamodb
        .put_item()
        .table_name(&values.table)
        .item("pk", AttributeValue::S(format!("run#{}", values.run_id)))
        .item("steps", AttributeValue::M(pending))
        .send()
        .await
        .unwrap();
    dynamodb
}

async fn record(dynamodb: &aws_sdk_dynamodb::Client, values: &RunValues) -> HashMap<String, AttributeValue> {
    let item =
        dynamodb.get_item().table_name(&values.table).key("pk", AttributeValue::S(format!("run#{}", values.run_id))).send().await.unwrap();
    item.item().cloned().unwrap()
}

fn step_statuses(record: &HashMap<String, AttributeValue>) -> HashMap<String, String> {
    record["steps"]
        .as_m()
        .unwrap()
        .iter()
        .map(|(name, step)| (name.clone(), step.as_m().unwrap()["status"].as_s().unwrap().clone()))
        .collect()
}

fn text<'a>(record: &'a HashMap<String, AttributeValue>, key: &str) -> &'a str {
    record.get(key).and_then(|v| v.as_s().ok()).map(String::as_str).unwrap_or("")
}

fn test_plan() -> Plan {
    let step = |name: &str, run: &str, place: StepPlace, needs: &[&str]| Step {
        name: name.into(),
        run: run.into(),
        place,
        needs: needs.iter().map(|s| s.to_string()).collect(),
    };
    Plan {
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

fn shellcheck(script: &str, name: &str) {
    let path = std::env::temp_dir().join(unique(name));
    std::fs::write(&path, script).unwrap();
    let output = Command::new(repo_root().join(".venv/bin/shellcheck"))
        .arg("--shell=bash")
        .arg(&path)
        .output()
        .expect("shellcheck runs (make venv)");
    let _ = std::fs::remove_file(&path);
    assert!(output.status.success(), "shellcheck {name}:\n{}", String::from_utf8_lossy(&output.stdout));
}

#[test]
fn the_scripts_of_the_shipped_plans_pass_shellcheck() {
    let catalog = Catalog::shipped().unwrap();
    let test = render(&catalog.plans().test, &values("t", "b", "test", "main")).unwrap();
    let build = render(&catalog.plans().build, &values("t", "b", "build", "v4.5.1")).unwrap();
    shellcheck(&test, "test-user-data-");
    shellcheck(&build, "build-user-data-");
    shellcheck(&render(&test_plan(), &values("t", "b", "test", "main")).unwrap(), "sandbox-user-data-");
}

#[tokio::test]
async fn a_run_arms_the_deadman_first_reports_every_step_and_powers_off() {
    let values = values(&unique("runs-"), &unique("logs-"), "test", "release/4.x");
    let plan = test_plan();
    let dynamodb = run_record(&values, &plan.step_names()).await;
    let sandbox = Sandbox::new();
    sandbox.run(&render(&plan, &values).unwrap());

    let calls = sandbox.calls();
    assert_eq!(calls.first().map(String::as_str), Some("shutdown -h +90"), "the deadman comes first: {calls:?}");
    assert_eq!(calls.last().map(String::as_str), Some("shutdown -h now"), "{calls:?}");
    let clone =
        format!("git clone --quiet https://github.com/SlideRuleEarth/sliderule.git {}", sandbox.dir.join("work/sliderule").display());
    assert!(calls.contains(&clone), "{calls:?}");
    assert!(calls.contains(&"git -c advice.detachedHead=false checkout --quiet release/4.x".to_owned()), "{calls:?}");
    assert!(
        calls.contains(&"conda run --name sliderule_env pytest --domain slideruleearth.io --organization ci-1".to_owned()),
        "{calls:?}"
    );
    assert!(calls.iter().any(|c| c.starts_with("docker run --rm") && c.ends_with("bash -euo pipefail -c make selftest")), "{calls:?}");

    let record = record(&dynamodb, &values).await;
    let statuses = step_statuses(&record);
    assert!(plan.step_names().iter().all(|s| statuses[s] == "passed"), "{statuses:?}");
    assert_eq!(text(&record, "outcome"), "succeeded");
    assert_eq!(text(&record, "commit"), "0123456789abcdef0123456789abcdef01234567");

    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&emulator().await).force_path_style(true).build());
    let logs = s3.list_objects_v2().bucket(&values.log_bucket).prefix(format!("runs/{}/", values.run_id)).send().await.unwrap();
    let keys: Vec<&str> = logs.contents().iter().filter_map(|o| o.key()).collect();
    assert!(keys.contains(&format!("runs/{}/lua-selftests.log", values.run_id).as_str()), "{keys:?}");
}

#[tokio::test]
async fn a_failing_step_fails_the_run_while_independent_steps_still_run() {
    let values = values(&unique("runs-"), &unique("logs-"), "test", "main");
    let plan = test_plan();
    let dynamodb = run_record(&values, &plan.step_names()).await;
    let sandbox = Sandbox::new();
    sandbox.fail_when("make config-debug");
    sandbox.run(&render(&plan, &values).unwrap());

    let record = record(&dynamodb, &values).await;
    let statuses = step_statuses(&record);
    assert_eq!(statuses["debug-build"], "failed");
    assert_eq!(statuses["lua-selftests"], "skipped", "it needs the build");
    assert_eq!(statuses["manager-pytests"], "passed", "independent steps still run");
    assert_eq!(statuses["python-client-pytests"], "passed");
    assert_eq!(text(&record, "outcome"), "failed");
    let exit_code = record["steps"].as_m().unwrap()["debug-build"].as_m().unwrap()["exit_code"].as_n().unwrap().clone();
    assert_eq!(exit_code, "3");
    assert_eq!(sandbox.calls().last().map(String::as_str), Some("shutdown -h now"));
}

#[tokio::test]
async fn a_script_killed_midway_still_reports_through_its_trap() {
    let values = values(&unique("runs-"), &unique("logs-"), "test", "main");
    let plan = test_plan();
    let dynamodb = run_record(&values, &plan.step_names()).await;
    let sandbox = Sandbox::new();
    sandbox.sleep_when("npm test");
    let mut child = sandbox.command(&render(&plan, &values).unwrap()).spawn().unwrap();

    // Wait until the slow step is running, then stop the whole run as a shutdown would.
    let started = Instant::now();
    loop {
        let statuses = step_statuses(&record(&dynamodb, &values).await);
        if statuses["nodejs-client-jests"] == "running" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the step never started: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let killed = Command::new("kill").args(["-s", "TERM", "--", &format!("-{}", child.id())]).status().unwrap();
    assert!(killed.success(), "the run was signalled");
    let status = child.wait().unwrap();
    assert!(!status.success());

    let record = record(&dynamodb, &values).await;
    let statuses = step_statuses(&record);
    assert_eq!(statuses["nodejs-client-jests"], "failed", "{statuses:?}");
    assert_eq!(statuses["manager-pytests"], "skipped", "never ran: {statuses:?}");
    assert_eq!(text(&record, "outcome"), "failed");
    assert_eq!(text(&record, "instance_state"), "finished");
    assert_eq!(sandbox.calls().last().map(String::as_str), Some("shutdown -h now"));
}

#[test]
fn injection_attempts_in_every_field_are_refused_before_a_script_exists() {
    let marker = std::env::temp_dir().join(unique("pwned-"));
    let attack = format!("x$(touch {})", marker.display());
    assert!(ClusterName::parse(&attack).is_err());
    assert!(GitRef::parse(&attack).is_err());
    assert!(GitRef::parse(&format!("main;touch {}", marker.display())).is_err());
    let fields: [fn(&mut RunValues, &str); 8] = [
        |v, a| v.run_id = a.into(),
        |v, a| v.region = a.into(),
        |v, a| v.table = a.into(),
        |v, a| v.log_bucket = a.into(),
        |v, a| v.repository = format!("https://x/{a}"),
        |v, a| v.build_image = a.into(),
        |v, a| v.registry = a.into(),
        |v, a| v.domain = a.into(),
    ];
    for spoil in fields {
        let mut spoiled = values("t", "b", "test", "main");
        spoil(&mut spoiled, &attack);
        assert!(render(&test_plan(), &spoiled).is_err());
    }
    assert!(!Path::new(&marker).exists());
}
