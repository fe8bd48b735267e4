//! The cluster template's instance bootstrap: rendered as CloudFormation renders it, linted with
//! shellcheck, then run in a sandbox (stub commands that record their arguments, the real AWS CLI
//! against the local AWS emulator) once for each role an instance can have, asserting the compose
//! file it writes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;

use provisioner_e2e::{repo_root, shellcheck, unique, Sandbox};
use serde_yaml::Value;

const REGISTRY: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const VERSION: &str = "v5.5.0";
const DOMAIN: &str = "slideruleearth.io";
const ILB: &str = "10.0.128.5";
const MONITOR: &str = "10.0.1.4";
const NODE: &str = "10.0.7.7";

fn template() -> Value {
    let text = std::fs::read_to_string(repo_root().join("clusters/sliderule-cluster.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// `!FindInMap [map, key, attribute]` of the template's Mappings.
fn find_in_map(template: &Value, reference: &Value) -> String {
    let Value::Tagged(tagged) = reference else { panic!("expected !FindInMap, got {reference:?}") };
    assert_eq!(tagged.tag, "!FindInMap");
    let path: Vec<&str> = tagged.value.as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    template["Mappings"][path[0]][path[1]][path[2]].as_str().unwrap().to_owned()
}

/// `Fn::Sub` as CloudFormation evaluates it: `${Name}` is replaced, `${!Name}` is the literal `${Name}`.
fn substitute(text: &str, values: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after.find('}').expect("every ${ is closed");
        let name = &after[..end];
        match name.strip_prefix('!') {
            Some(literal) => out.push_str(&format!("${{{literal}}}")),
            None => out.push_str(
                values.get(name).unwrap_or_else(|| panic!("the user-data refers to ${{{name}}}, which nothing gives")),
            ),
        }
        rest = &after[end + 1..];
    }
    out + rest
}

/// The stack's parameters in these tests: every parameter the template declares has a value here,
/// so a new one fails the test until it is given one.
fn parameters(bucket: &str, alert_stream: &str) -> HashMap<String, String> {
    let given = [
        ("ClusterName", "ci-1"),
        ("Version", VERSION),
        ("IsPublic", "true"),
        ("NodeCapacity", "2"),
        ("Domain", DOMAIN),
        ("HostedZoneId", "Z0TEST"),
        ("ContainerRegistry", REGISTRY),
        ("ProjectBucket", bucket),
        ("ProjectPublicBucket", "sliderule-public"),
        ("ProjectFolder", "cf"),
        ("LogBucket", "sliderule-provisioner-runs"),
        ("JwtIssuer", "https://login.slideruleearth.io"),
        ("PublicDataBuckets", "sliderule-public"),
        ("AlertStream", alert_stream),
        ("TelemetryStream", ""),
        ("EnvironmentVersion", "sliderule-provisioner-test"),
        ("AutohealImage", "willfarrell/autoheal:latest"),
        ("ImageId", "ami-0123456789abcdef0"),
        ("IlbInstanceType", "c8g.large"),
        ("MonitorInstanceType", "c8g.large"),
        ("NodeInstanceType", "t4g.2xlarge"),
        ("AWS::Region", "us-east-1"),
        ("AWS::StackName", "sliderule-cluster-ci-1"),
    ];
    let values: HashMap<String, String> = given.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    for name in template()["Parameters"].as_mapping().unwrap().keys() {
        assert!(
            values.contains_key(name.as_str().unwrap()),
            "give the template's parameter {name:?} a value in this test"
        );
    }
    values
}

/// The bootstrap every instance runs, rendered for a stack with `parameters`.
fn rendered(parameters: &HashMap<String, String>) -> String {
    let template = template();
    let user_data = &template["Resources"]["InstanceLaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"];
    let sub = user_data["Fn::Base64"]["Fn::Sub"].as_sequence().expect("Fn::Sub [script, variables]");
    let mut values = parameters.clone();
    for (name, reference) in sub[1].as_mapping().unwrap() {
        values.insert(name.as_str().unwrap().to_owned(), find_in_map(&template, reference));
    }
    substitute(sub[0].as_str().unwrap(), &values)
}

/// A sandbox whose instance has `address`, which decides its role.
fn sandbox(address: &str) -> Sandbox {
    let sandbox = Sandbox::new("cluster-sandbox-");
    std::fs::write(sandbox.dir.join("address"), format!("{address} 172.17.0.1\n")).unwrap();
    sandbox
}

/// Where the bootstrap's host paths hang off in a sandbox.
fn host_root(sandbox: &Sandbox) -> PathBuf {
    sandbox.dir.join("root")
}

fn called(sandbox: &Sandbox, call: &str) -> bool {
    sandbox.calls().iter().any(|c| c == call)
}

/// Runs the bootstrap; returns whether it succeeded, and its error output.
fn boot(sandbox: &Sandbox, script: &str) -> (bool, String) {
    let output = sandbox
        .bash(script)
        .env("SLIDERULE_CLUSTER_ROOT", host_root(sandbox))
        .env("SLIDERULE_CLUSTER_RETRY_SECONDS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn compose(sandbox: &Sandbox) -> Value {
    let text =
        std::fs::read_to_string(host_root(sandbox).join("opt/sliderule/docker-compose.yml")).expect("a compose file");
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("the compose file is not YAML ({e}):\n{text}"))
}

/// An instance at `address` booted with a project bucket of its own (with the certificate): its
/// sandbox, the bucket and the compose file it wrote.
async fn booted(address: &str, alert_stream: &str) -> (Sandbox, String, Value) {
    let bucket = project_bucket(true).await;
    let sandbox = sandbox(address);
    let (ok, stderr) = boot(&sandbox, &rendered(&parameters(&bucket, alert_stream)));
    assert!(ok, "bootstrap failed: {stderr}");
    let compose = compose(&sandbox);
    (sandbox, bucket, compose)
}

/// A project bucket of this test's own with the data folders and, unless told not to, the
/// domain's TLS certificate.
async fn project_bucket(with_certificate: bool) -> String {
    let bucket = unique("project-");
    provisioner_e2e::s3::create_bucket(&bucket);
    let mut keys = vec!["cf/server/GeoLite2-City.mmdb".to_owned(), "cf/ams/atl13.db".to_owned()];
    if with_certificate {
        keys.push(format!("cf/{DOMAIN}.pem"));
    }
    for key in keys {
        provisioner_e2e::s3::put(&bucket, &key, "data");
    }
    bucket
}

fn service_names(compose: &Value) -> Vec<String> {
    let mut names: Vec<String> =
        compose["services"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

fn strings(value: &Value) -> Vec<String> {
    value.as_sequence().map(|s| s.iter().map(|v| v.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
}

fn image(compose: &Value, service: &str) -> String {
    compose["services"][service]["image"].as_str().unwrap().to_owned()
}

/// The ports each role's security group opens, as (port, from where).
fn ingress(group: &str) -> Vec<(i64, String)> {
    let template = template();
    let rules = template["Resources"][group]["Properties"]["SecurityGroupIngress"].as_sequence().unwrap().clone();
    rules
        .iter()
        .map(|rule| {
            let from = match &rule["CidrIp"] {
                Value::String(cidr) => cidr.clone(),
                reference => find_in_map(&template, reference),
            };
            assert_eq!(rule["FromPort"], rule["ToPort"], "one port per rule");
            (rule["FromPort"].as_i64().unwrap(), from)
        })
        .collect()
}

#[test]
fn the_rendered_bootstrap_passes_shellcheck() {
    let script = rendered(&parameters("sliderule", "alerts"));
    assert!(!script.contains("${Version}") && script.contains(&format!("version='{VERSION}'")));
    shellcheck(&script, "cluster-user-data-");
}

#[tokio::test]
async fn the_ilb_fetches_its_key_and_certificate_and_runs_the_load_balancer() {
    let (sandbox, _, compose) = booted(ILB, "").await;
    assert_eq!(service_names(&compose), ["autoheal", "ilb", "monitor-agent"]);
    assert_eq!(image(&compose, "ilb"), format!("{REGISTRY}/ilb:{VERSION}"));
    assert_eq!(image(&compose, "monitor-agent"), format!("{REGISTRY}/monitor-agent:{VERSION}"));
    let ilb = &compose["services"]["ilb"];
    assert_eq!(ilb["network_mode"], "host");
    assert_eq!(
        strings(&ilb["environment"]),
        ["IS_PUBLIC=true", "DOMAIN=slideruleearth.io", "CLUSTER=ci-1", "JWT_ISSUER=https://login.slideruleearth.io"]
    );
    assert!(strings(&ilb["healthcheck"]["test"]).contains(&"http://localhost:8050/discovery/health".to_owned()));
    let root = host_root(&sandbox).display().to_string();
    assert!(strings(&ilb["volumes"]).contains(&format!("{root}/etc/ssl/private:/etc/ssl/private")));
    assert!(
        host_root(&sandbox).join("etc/ssl/private/slideruleearth.io.pem").is_file(),
        "the certificate came from the project bucket"
    );
    assert!(host_root(&sandbox).join("etc/haproxy/pem/pubkey.pem").is_file(), "the token key came from the issuer");
    assert!(called(
        &sandbox,
        &format!("curl -fsS -o {root}/etc/haproxy/pem/pubkey.pem https://login.slideruleearth.io/auth/pem")
    ));
    assert!(called(&sandbox, &format!("docker login --username AWS --password-stdin {REGISTRY}")));
    assert!(called(
        &sandbox,
        &format!("docker compose --project-name cluster --file {root}/opt/sliderule/docker-compose.yml up --detach")
    ));
    assert!(called(
        &sandbox,
        "cfn-signal --exit-code 0 --stack sliderule-cluster-ci-1 --resource IlbInstance --region us-east-1"
    ));
    assert_eq!(
        ingress("IlbSecurityGroup"),
        [(443, "0.0.0.0/0".into()), (8050, "10.0.0.0/16".into()), (9100, "10.0.0.0/16".into())]
    );
}

#[tokio::test]
async fn the_monitor_runs_the_monitor_and_an_agent_that_ships_no_logs() {
    let (sandbox, _, compose) = booted(MONITOR, "").await;
    assert_eq!(service_names(&compose), ["autoheal", "monitor", "monitor-agent"]);
    assert_eq!(image(&compose, "monitor"), format!("{REGISTRY}/monitor:{VERSION}"));
    assert_eq!(strings(&compose["services"]["monitor-agent"]["environment"]), ["DISABLE_PROMTAIL=true"]);
    assert!(called(
        &sandbox,
        "cfn-signal --exit-code 0 --stack sliderule-cluster-ci-1 --resource MonitorInstance --region us-east-1"
    ));
    assert!(!host_root(&sandbox).join("data").exists(), "the monitor copies no data");
    assert_eq!(ingress("MonitorSecurityGroup"), [(3000, "10.0.0.0/16".into()), (3100, "10.0.0.0/16".into())]);
}

#[tokio::test]
async fn a_node_copies_its_data_and_runs_the_server_registered_with_the_ilb() {
    let (sandbox, bucket, compose) = booted(NODE, "recorder-firehose-alerts").await;
    assert_eq!(service_names(&compose), ["ams", "autoheal", "monitor-agent", "sliderule"]);
    assert_eq!(image(&compose, "sliderule"), format!("{REGISTRY}/sliderule:{VERSION}"));
    assert_eq!(image(&compose, "ams"), format!("{REGISTRY}/ams:{VERSION}"));
    let server = &compose["services"]["sliderule"];
    assert_eq!(strings(&server["command"]), ["/usr/local/etc/sliderule/server.lua"]);
    let environment = strings(&server["environment"]);
    for expected in [
        format!("IPV4={NODE}"),
        format!("ORCHESTRATOR=http://{ILB}:8050"),
        "CLUSTER=ci-1".into(),
        format!("DOMAIN={DOMAIN}"),
        format!("PROJECT_BUCKET={bucket}"),
        "PROJECT_FOLDER=cf".into(),
        "PROJECT_REGION=us-east-1".into(),
        "AMS=http://127.0.0.1:9082".into(),
        format!("CONTAINER_REGISTRY={REGISTRY}"),
        "ENVIRONMENT_VERSION=sliderule-provisioner-test".into(),
        "ALERT_STREAM=recorder-firehose-alerts".into(),
    ] {
        assert!(environment.contains(&expected), "{expected} in {environment:?}");
    }
    assert!(
        !environment.iter().any(|e| e.starts_with("TELEMETRY_STREAM")),
        "no telemetry stream was given: {environment:?}"
    );
    let root = host_root(&sandbox).display().to_string();
    let volumes = strings(&server["volumes"]);
    for expected in [
        format!("{root}/data:/data"),
        format!("{root}/etc/ssl/certs:/etc/ssl/certs"),
        "/var/run/docker.sock:/var/run/docker.sock".into(),
    ] {
        assert!(volumes.contains(&expected), "{expected} in {volumes:?}");
    }
    assert!(strings(&server["healthcheck"]["test"]).contains(&"http://localhost:9081/source/health".to_owned()));
    assert_eq!(compose["services"]["ams"]["entrypoint"], "/docker-entrypoint.sh");
    for copied in ["GeoLite2-City.mmdb", "atl13.db"] {
        assert!(host_root(&sandbox).join("data").join(copied).is_file(), "{copied} copied into /data");
    }
    assert!(!sandbox.calls().iter().any(|c| c.starts_with("cfn-signal")), "nodes are not signalled resources");
    assert_eq!(ingress("NodeSecurityGroup"), [(9081, "10.0.0.0/16".into()), (9100, "10.0.0.0/16".into())]);
}

#[tokio::test]
async fn an_ilb_without_its_certificate_fails_and_tells_cloudformation() {
    let bucket = project_bucket(false).await;
    let sandbox = sandbox(ILB);
    let (ok, _) = boot(&sandbox, &rendered(&parameters(&bucket, "")));
    assert!(!ok, "the bootstrap fails");
    assert!(called(
        &sandbox,
        "cfn-signal --exit-code 1 --stack sliderule-cluster-ci-1 --resource IlbInstance --region us-east-1"
    ));
    assert!(
        !sandbox.calls().iter().any(|c| c.starts_with("docker compose") && c.ends_with("up --detach")),
        "nothing started"
    );
}

#[tokio::test]
async fn a_compose_download_that_fails_its_checksum_is_not_installed() {
    let bucket = project_bucket(true).await;
    let sandbox = sandbox(NODE);
    // No Compose yet: the bootstrap downloads it, and the stub's download is not the pinned binary.
    sandbox.fail_when("docker compose version");
    let (ok, stderr) = boot(&sandbox, &rendered(&parameters(&bucket, "")));
    assert!(!ok, "the bootstrap fails");
    assert!(stderr.contains("did NOT match"), "sha256sum reports the mismatch: {stderr}");
    assert!(!host_root(&sandbox).join("usr/local/lib/docker/cli-plugins/docker-compose").exists());
    assert!(!sandbox.calls().iter().any(|c| c.ends_with("up --detach")));
}
