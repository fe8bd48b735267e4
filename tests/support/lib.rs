//! Helpers for tests against the local stack: SDK clients pointed at the AWS emulator, unique
//! names so tests never share state, and `make invoke` as callers use it.

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use serde_json::Value;

/// The destroy schedules of `cluster` in the local stack's schedule group, as EventBridge
/// Scheduler describes them.
pub async fn destroy_schedules(cluster: &str) -> Vec<aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput> {
    const GROUP: &str = "sliderule-provisioner";
    let client = aws_sdk_scheduler::Client::new(&emulator().await);
    let listed =
        client.list_schedules().group_name(GROUP).name_prefix(format!("destroy.{cluster}.")).send().await.unwrap();
    let mut schedules = Vec::new();
    for summary in listed.schedules() {
        schedules.push(client.get_schedule().group_name(GROUP).name(summary.name().unwrap()).send().await.unwrap());
    }
    schedules
}

/// The repository root, where the Makefile is.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn endpoint() -> String {
    let port = std::env::var("LOCAL_AWS_PORT").unwrap_or_else(|_| "5000".into());
    format!("http://127.0.0.1:{port}")
}

/// SDK configuration for the emulator. Fails the test, rather than skipping it, when the
/// emulator is not running: `make test` starts it.
pub async fn emulator() -> SdkConfig {
    let url = endpoint();
    let address = url.trim_start_matches("http://").to_owned();
    assert!(
        std::net::TcpStream::connect(&address).is_ok(),
        "the local AWS emulator is not answering at {url}; run the tests with `make test` (or `make local-up` first)"
    );
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(provisioner_core::aws::https_client())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "tests"))
        .load()
        .await
}

/// The local stack's state directory (`LOCAL_STACK_STATE`, or `.local`).
pub fn local_stack_state() -> PathBuf {
    std::env::var_os("LOCAL_STACK_STATE").map_or_else(|| repo_root().join(".local"), PathBuf::from)
}

/// The environment the local stack gives the functions (`lambda.env` in its state directory,
/// `LOCAL_STACK_STATE` or `.local`, resolved from template.yaml), so tests build what the
/// functions build.
pub fn local_function_env() -> std::collections::BTreeMap<String, String> {
    let path = local_stack_state().join("lambda.env");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is unreadable ({e}); run `make local-up`", path.display()));
    text.lines().filter_map(|line| line.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// The account settings the deploy function passes to cluster stacks on the local stack.
pub fn local_cluster_settings() -> provisioner_core::settings::ClusterSettings {
    let env = local_function_env();
    provisioner_core::settings::Settings::from_lookup(|name| env.get(name).cloned()).cluster_parameters()
}

/// A name no other test uses: `prefix` plus 8 random lowercase hex characters.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// The outcome of `make invoke`: its exit status and the JSON it printed.
#[derive(Debug)]
pub struct Invoked {
    pub exit: i32,
    pub answer: Value,
    pub stderr: String,
}

/// Runs `make invoke LOCAL=1 FUNCTION=… PAYLOAD=…` the way a developer would.
pub fn make_invoke(function: &str, payload: &str) -> Invoked {
    make(&["invoke", "LOCAL=1", &format!("FUNCTION={function}"), &format!("PAYLOAD={payload}")])
}

/// Runs a make target in the repository root, with make's own chatter silenced.
pub fn make(args: &[&str]) -> Invoked {
    let output = Command::new("make")
        .arg("-s")
        .arg("--no-print-directory")
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("make runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let answer =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("make {args:?} printed no JSON ({e}): {stdout}"));
    Invoked {
        exit: output.status.code().unwrap_or(-1),
        answer,
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
    }
}

impl Invoked {
    pub fn error_type(&self) -> &str {
        self.answer["errorType"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Value {
        assert_eq!(self.exit, 0, "expected success: {:#} {}", self.answer, self.stderr);
        assert_eq!(self.answer["status"], "success", "{:#}", self.answer);
        &self.answer
    }

    /// A dry run's answer: the plan.
    #[track_caller]
    pub fn assert_plan(&self) -> &Value {
        assert_eq!(self.exit, 0, "expected a plan: {:#} {}", self.answer, self.stderr);
        assert_eq!(self.answer["status"], "plan", "{:#}", self.answer);
        &self.answer
    }

    #[track_caller]
    pub fn assert_error(&self, error_type: &str) {
        assert_eq!(self.exit, 1, "expected a function error: {:#} {}", self.answer, self.stderr);
        assert_eq!(self.error_type(), error_type, "{:#}", self.answer);
        let message = self.answer["errorMessage"].as_str().unwrap_or("");
        assert!(!message.is_empty() && !message.contains('\n'), "one sentence: {message:?}");
    }
}

/// Creates a table laid out like the provisioner's (partition key `pk`).
pub async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    client
        .create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(provisioner_core::table::KEY)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(provisioner_core::table::KEY)
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("the table is created");
}

/// A temporary directory with the stub commands of `tools/simulate-instance` in `bin/`, for
/// running an instance's script: every stub records its call in `calls.log`, fails (exit 3) when
/// its call contains a line of `fail-when` and sleeps when it contains a line of `sleep-when`.
/// Removed when dropped, unless `KEEP_SANDBOX` is set.
pub struct Sandbox {
    pub dir: PathBuf,
}

impl Sandbox {
    pub fn new(prefix: &str) -> Sandbox {
        let dir = std::env::temp_dir().join(unique(prefix));
        let written =
            Command::new(repo_root().join("tools/simulate-instance")).arg("--stubs").arg(&dir).status().unwrap();
        assert!(written.success(), "stubs written");
        Sandbox { dir }
    }

    pub fn fail_when(&self, pattern: &str) {
        std::fs::write(self.dir.join("fail-when"), format!("{pattern}\n")).unwrap();
    }

    pub fn sleep_when(&self, pattern: &str) {
        std::fs::write(self.dir.join("sleep-when"), format!("{pattern}\n")).unwrap();
    }

    /// The lines of one of the sandbox's files; none when it does not exist.
    pub fn lines(&self, file: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// Every stub call, in order.
    pub fn calls(&self) -> Vec<String> {
        self.lines("calls.log")
    }

    /// A `bash` of `script` in a session of its own, with an empty environment but the stubs, then
    /// the real AWS CLI (the local stack's, loaded once: [`aws_cli_dir`]), then the system on
    /// `PATH`, and the AWS emulator's endpoint and credentials.
    pub fn bash(&self, script: &str) -> Command {
        let path = self.dir.join("user-data.sh");
        std::fs::write(&path, script).unwrap();
        let mut command = Command::new("setsid");
        command
            .arg("bash")
            .arg(&path)
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:{}:{}:/usr/bin:/bin",
                    self.dir.join("bin").display(),
                    aws_cli_dir().display(),
                    repo_root().join(".venv/bin").display()
                ),
            )
            .env("PROVISIONER_AWS_CLI_SOCKET", aws_cli_socket())
            .env("HOME", &self.dir)
            .env("SANDBOX", &self.dir)
            .env("AWS_ENDPOINT_URL", endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
        command
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

/// Fails the test with shellcheck's findings unless `script` (a bash script) passes it.
pub fn shellcheck(script: &str, name: &str) {
    let path: &Path = &std::env::temp_dir().join(unique(name));
    std::fs::write(path, script).unwrap();
    let output = Command::new(repo_root().join(".venv/bin/shellcheck"))
        .arg("--shell=bash")
        .arg(path)
        .output()
        .expect("shellcheck runs (make venv)");
    let _ = std::fs::remove_file(path);
    assert!(output.status.success(), "shellcheck {name}:\n{}", String::from_utf8_lossy(&output.stdout));
}

/// Where `aws` is the AWS CLI of the venv served by the local stack (`tools/aws-cli/aws`): the
/// real CLI, loaded once rather than at each of the thousands of calls the instance scripts
/// make; the venv's own when the stack serves none.
pub fn aws_cli_dir() -> PathBuf {
    repo_root().join("tools/aws-cli")
}

/// The local stack's AWS CLI server (`tools/local/aws_cli.py`).
pub fn aws_cli_socket() -> PathBuf {
    local_stack_state().join("aws-cli.sock")
}

/// The AWS CLI of the venv, against the emulator.
pub fn aws_cli(args: &[&str]) -> std::process::Output {
    aws_cli_with_input(args, "")
}

fn aws_cli_with_input(args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(repo_root().join(".venv/bin/python"))
        .arg(aws_cli_dir().join("aws"))
        .args(args)
        .env("PROVISIONER_AWS_CLI_SOCKET", aws_cli_socket())
        .args(["--region", "us-east-1", "--output", "json"])
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the AWS CLI runs (make venv)");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("the AWS CLI reads its input");
    child.wait_with_output().expect("the AWS CLI ends")
}

/// S3 on the emulator, through the AWS CLI (the tests link no S3 SDK, so every build of the
/// workspace resolves the SDK crates with the same features and compiles them once).
pub mod s3 {
    use super::aws_cli_with_input;

    fn ok(args: &[&str], input: &str) -> String {
        let output = aws_cli_with_input(args, input);
        assert!(output.status.success(), "aws {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn create_bucket(bucket: &str) {
        ok(&["s3api", "create-bucket", "--bucket", bucket], "");
    }

    pub fn put(bucket: &str, key: &str, body: &str) {
        ok(&["s3", "cp", "-", &format!("s3://{bucket}/{key}")], body);
    }

    /// The keys under `prefix`.
    pub fn keys(bucket: &str, prefix: &str) -> Vec<String> {
        let listed: serde_json::Value =
            serde_json::from_str(&ok(&["s3api", "list-objects-v2", "--bucket", bucket, "--prefix", prefix], ""))
                .unwrap_or(serde_json::Value::Null);
        listed["Contents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["Key"].as_str().map(str::to_owned))
            .collect()
    }

    /// The objects under `prefix` as text, by key, in one call.
    pub fn texts(bucket: &str, prefix: &str) -> std::collections::BTreeMap<String, String> {
        let dir = std::env::temp_dir().join(super::unique("provisioner-s3-"));
        let target = dir.to_string_lossy().into_owned();
        ok(&["s3", "cp", "--recursive", "--quiet", &format!("s3://{bucket}/{prefix}"), &target], "");
        let mut texts = std::collections::BTreeMap::new();
        let mut dirs = vec![dir.clone()];
        while let Some(current) = dirs.pop() {
            for entry in std::fs::read_dir(&current).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let relative = path.strip_prefix(&dir).expect("under the download").to_string_lossy().into_owned();
                    texts.insert(format!("{prefix}{relative}"), std::fs::read_to_string(&path).unwrap_or_default());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        texts
    }
}
