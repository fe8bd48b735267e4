//! The AWS adapters against the local AWS emulator, over HTTP with the real SDK clients. Each
//! test uses its own names, so tests run in parallel on one emulator.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use provisioner_core::aws::cloudformation::CloudFormationStacks;
use provisioner_core::aws::dynamodb::DynamoStore;
use provisioner_core::aws::ec2::Ec2Instances;
use provisioner_core::aws::ecr::EcrImages;
use provisioner_core::aws::scheduler::EventBridgeSchedules;
use provisioner_core::aws::Aws;
use provisioner_core::catalog::Catalog;
use provisioner_core::domain::history::start_of_month;
use provisioner_core::domain::ScheduleDestroyRequest;
use provisioner_core::domain::{ClusterName, ClusterRequest, DeployRequest, HistoryEntry, ImageTag, RunId};
use provisioner_core::error::AwsErrorKind;
use provisioner_core::ports::{ClusterPorts, Images, Locks, NoNotices, Schedules, StackSpec, Stacks, SystemClock};
use provisioner_core::service::budget::{month_spend, SpendSources};
use provisioner_core::service::{Invocation, Provisioner, Timeouts};
use provisioner_core::settings::ScheduleTarget;
use provisioner_core::testing::contract;
use provisioner_e2e::{emulator, local_cluster_settings, unique};

const TEMPLATE: &str = include_str!("../../../clusters/sliderule-cluster.yaml");

async fn stacks() -> CloudFormationStacks {
    CloudFormationStacks::new(&Aws::from_config(emulator().await))
}

async fn schedules(group: &str) -> EventBridgeSchedules {
    let config = emulator().await;
    let client = aws_sdk_scheduler::Client::new(&config);
    client.create_schedule_group().name(group).send().await.unwrap();
    EventBridgeSchedules::new(
        &Aws::from_config(config),
        ScheduleTarget {
            group: group.to_owned(),
            destroy_function_arn: "arn:aws:lambda:us-east-1:123456789012:function:provisioner-destroy".into(),
            role_arn: "arn:aws:iam::123456789012:role/scheduler".into(),
            dead_letter_arn: Some("arn:aws:sqs:us-east-1:123456789012:dlq".into()),
        },
    )
}

async fn table() -> (aws_sdk_dynamodb::Client, String) {
    let client = aws_sdk_dynamodb::Client::new(&emulator().await);
    let name = unique("locks-");
    provisioner_e2e::create_table(&client, &name).await;
    (client, name)
}

/// The shipped ci-* profile's stack, as deploy would create it on the local stack.
fn spec(name: &str) -> StackSpec {
    let cluster = ClusterName::parse("ci-adapter").unwrap();
    let catalog = Catalog::shipped().unwrap();
    let profile = catalog.profile_for(&cluster).unwrap();
    let mut parameters =
        profile.stack_parameters(&cluster, &profile.default_version, &local_cluster_settings()).unwrap();
    parameters.retain(|(key, _)| key != "NodeCapacity");
    parameters.push(("NodeCapacity".into(), "2".into()));
    StackSpec {
        name: name.to_owned(),
        template_body: TEMPLATE.to_owned(),
        parameters,
        tags: vec![("sliderule:cluster".into(), "ci-adapter".into())],
    }
}

#[tokio::test]
async fn cloudformation_creates_describes_and_deletes_a_cluster_stack() {
    let stacks = stacks().await;
    let name = unique("sliderule-cluster-ci-");
    assert!(stacks.describe(&name).await.unwrap().is_none(), "absent before");
    let id = stacks.create(&spec(&name)).await.unwrap();
    assert!(id.contains(&name), "{id}");
    let stack = stacks.describe(&name).await.unwrap().expect("created");
    assert_eq!(stack.status.as_str(), "CREATE_COMPLETE");
    assert_eq!(stack.outputs["ClusterName"], "ci-adapter");
    assert_eq!(stack.outputs["NodeCapacity"], "2");
    assert_eq!(stack.outputs["Url"], "https://ci-adapter.slideruleearth.io");
    assert_eq!(stack.parameters["Version"], "latest");

    let again = stacks.create(&spec(&name)).await.unwrap_err();
    assert_eq!(again.aws_kind(), Some(AwsErrorKind::Conflict), "{again}");

    stacks.delete(&name).await.unwrap();
    assert!(stacks.describe(&name).await.unwrap().is_none(), "deleted");
    stacks.delete(&name).await.unwrap();
    assert!(stacks.failure_reasons(&name).await.unwrap().is_empty());
}

#[tokio::test]
async fn aws_errors_name_service_operation_and_code_and_are_classified() {
    let store = DynamoStore::new(&Aws::from_config(emulator().await), unique("no-such-table-"));
    let now = Timestamp::now();
    let cluster = ClusterName::parse("ci-1").unwrap();
    let error = store.try_acquire(&cluster, &contract::lease("a", now, 60), now, now).await.unwrap_err();
    assert_eq!(error.code(), "AwsError");
    assert_eq!(error.aws_kind(), Some(AwsErrorKind::NotFound));
    let text = error.to_string();
    assert!(text.starts_with("DynamoDB PutItem failed with ResourceNotFoundException"), "{text}");
}

#[tokio::test]
async fn scheduler_creates_lists_by_prefix_and_deletes_one_time_schedules() {
    let group = unique("group-");
    let schedules = schedules(&group).await;
    let at: Timestamp = "2030-01-02T03:04:05Z".parse().unwrap();
    let input = r#"{"cluster":"ci-1"}"#;
    schedules.create("destroy.ci-1.20300102T030405", at, input, None).await.unwrap();
    schedules.create("destroy.ci-10.20300102T030405", at, input, None).await.unwrap();

    let listed = schedules.list("destroy.ci-1.").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "destroy.ci-1.20300102T030405");
    assert_eq!(listed[0].at, at);

    let conflict = schedules.create("destroy.ci-1.20300102T030405", at, input, None).await.unwrap_err();
    assert_eq!(conflict.aws_kind(), Some(AwsErrorKind::Conflict), "{conflict}");

    // What EventBridge will do when it fires.
    let client = aws_sdk_scheduler::Client::new(&emulator().await);
    let raw = client.get_schedule().group_name(&group).name("destroy.ci-1.20300102T030405").send().await.unwrap();
    assert_eq!(raw.schedule_expression(), Some("at(2030-01-02T03:04:05)"));
    assert_eq!(raw.schedule_expression_timezone(), Some("UTC"));
    let target = raw.target().unwrap();
    assert_eq!(target.arn(), "arn:aws:lambda:us-east-1:123456789012:function:provisioner-destroy");
    assert_eq!(target.role_arn(), "arn:aws:iam::123456789012:role/scheduler");
    assert_eq!(target.input(), Some(input));
    assert!(target.retry_policy().is_some_and(|p| p.maximum_retry_attempts() == Some(20)));
    assert_eq!(target.dead_letter_config().and_then(|d| d.arn()), Some("arn:aws:sqs:us-east-1:123456789012:dlq"));
    assert_eq!(raw.action_after_completion().map(|a| a.as_str()), Some("DELETE"));

    schedules.delete("destroy.ci-1.20300102T030405").await.unwrap();
    schedules.delete("destroy.ci-1.20300102T030405").await.unwrap();
    assert!(schedules.list("destroy.ci-1.").await.unwrap().is_empty());
    assert_eq!(schedules.list("destroy.").await.unwrap().len(), 1);
}

// Each port's contract (provisioner_core::testing::contract), which the fakes keep too.

#[tokio::test]
async fn the_cloudformation_adapter_keeps_the_stacks_contract() {
    contract::stacks(&stacks().await, &spec(&unique("sliderule-cluster-ci-"))).await;
}

#[tokio::test]
async fn the_scheduler_adapter_keeps_the_schedules_contract() {
    let at: Timestamp = "2030-01-02T03:04:05Z".parse().unwrap();
    contract::schedules(&schedules(&unique("group-")).await, "destroy.ci-1.", at).await;
}

#[tokio::test]
async fn the_dynamodb_adapter_keeps_the_locks_contract() {
    let (_, name) = table().await;
    let (key, other) = (ClusterName::parse("ci-1").unwrap(), ClusterName::parse("ci-2").unwrap());
    contract::locks(&DynamoStore::new(&Aws::from_config(emulator().await), &name), &key, &other).await;
}

#[tokio::test]
async fn the_dynamodb_adapter_keeps_the_runs_contract() {
    let (_, name) = table().await;
    contract::runs(&DynamoStore::new(&Aws::from_config(emulator().await), &name), &unique("ci-")).await;
}

/// A start that failed between its two writes leaves a live run with no record: the adapter
/// takes it out once it is older than the cutoff, and nothing else.
#[tokio::test]
async fn the_dynamodb_adapter_takes_out_live_runs_never_recorded() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use provisioner_core::table::{live_runs, KEY};
    let (client, name) = table().await;
    let cutoff = provisioner_core::domain::time::whole_seconds(Timestamp::now());
    for (id, noted) in contract::unrecorded_plants(cutoff) {
        client
            .update_item()
            .table_name(&name)
            .key(KEY, AttributeValue::S(live_runs::KEY_VALUE.into()))
            .update_expression("SET #run = :noted")
            .expression_attribute_names("#run", id.as_str())
            .expression_attribute_values(":noted", AttributeValue::S(noted.to_string()))
            .send()
            .await
            .unwrap();
    }
    let store = DynamoStore::new(&Aws::from_config(emulator().await), &name);
    contract::unrecorded_live_runs(&store, &unique("ci-"), cutoff).await;
}

/// A run is read with what its current instance reported (its `report#ROLE-ID:INSTANCE-ID`
/// item, the only one its role may write), and with no report of another run or attempt.
#[tokio::test]
async fn a_run_is_read_with_its_current_instances_report_and_no_other() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use provisioner_core::domain::attempt::RunnerRoles;
    use provisioner_core::domain::{RunKind, RunState, StepStatus};
    use provisioner_core::ports::Runs;

    let (client, name) = table().await;
    let roles = RunnerRoles { test: Some("AROATESTRUNNER".into()), build: Some("AROABUILDRUNNER".into()) };
    let store = DynamoStore::new(&Aws::from_config(emulator().await), &name).with_runner_roles(roles);
    let now = Timestamp::now();
    let mut record = contract::run_record(RunKind::Test, &unique("ci-"), "main", now);
    store.start(&record, now).await.unwrap();
    let instance = "i-0123456789abcdef0";
    record.instance_id = Some(instance.into());
    record.attempts[0].instance_id = Some(instance.into());
    record.state = RunState::Running;
    store.update(&record).await.unwrap();
    let report = |key: &str, run: &str, attempt: &str, outcome: &str| {
        let checkout = AttributeValue::M([("status".to_owned(), AttributeValue::S("passed".into()))].into());
        client
            .put_item()
            .table_name(&name)
            .item("pk", AttributeValue::S(key.to_owned()))
            .item("run_id", AttributeValue::S(run.to_owned()))
            .item("attempt", AttributeValue::N(attempt.to_owned()))
            .item("steps", AttributeValue::M([("checkout".to_owned(), checkout)].into()))
            .item("outcome", AttributeValue::S(outcome.to_owned()))
            .send()
    };
    let id = record.run_id.clone();
    let read = || async {
        let run = store.get(&id).await.unwrap().unwrap();
        let listed = store.list().await.unwrap().into_iter().find(|r| r.run_id == id).unwrap();
        assert_eq!((run.outcome.clone(), run.steps[0].status), (listed.outcome.clone(), listed.steps[0].status));
        (run.outcome, run.steps[0].status)
    };
    assert_eq!(read().await, (None, StepStatus::Pending), "nothing reported yet");
    // Another run's report, and this run's under the BUILD role: not this run's instance's.
    report(&format!("report#AROATESTRUNNER:{instance}"), "test-ci-other-20261205t120000-ab12", "1", "failed")
        .await
        .unwrap();
    assert_eq!(read().await, (None, StepStatus::Pending), "another run's report is not read");
    report(&format!("report#AROATESTRUNNER:{instance}"), record.run_id.as_str(), "2", "failed").await.unwrap();
    assert_eq!(read().await, (None, StepStatus::Pending), "another attempt's report is not read");
    report(&format!("report#AROABUILDRUNNER:{instance}"), record.run_id.as_str(), "1", "failed").await.unwrap();
    assert_eq!(read().await, (None, StepStatus::Pending), "another role's report is not read");
    report(&format!("report#AROATESTRUNNER:{instance}"), record.run_id.as_str(), "1", "succeeded").await.unwrap();
    assert_eq!(read().await, (Some("succeeded".into()), StepStatus::Passed));
}

#[tokio::test]
async fn the_dynamodb_adapter_keeps_the_history_contract() {
    let (_, name) = table().await;
    let (cluster, other) = (ClusterName::parse(&unique("ci-")).unwrap(), ClusterName::parse(&unique("ci-")).unwrap());
    contract::history(&DynamoStore::new(&Aws::from_config(emulator().await), &name), &cluster, &other).await;
}

#[tokio::test]
async fn the_dynamodb_adapter_keeps_the_test_history_contract() {
    let (_, name) = table().await;
    contract::test_history(&DynamoStore::new(&Aws::from_config(emulator().await), &name), &unique("ci-")).await;
}

#[tokio::test]
async fn the_dynamodb_adapter_keeps_the_launch_log_contract() {
    let (_, name) = table().await;
    let run_id =
        provisioner_core::domain::RunId::parse(&format!("test-{}-20261206t120000-ab12", unique("ci-"))).unwrap();
    contract::launch_log(&DynamoStore::new(&Aws::from_config(emulator().await), &name), &run_id).await;
}

#[tokio::test]
async fn the_dynamodb_adapter_keeps_the_books_contract() {
    let (_, name) = table().await;
    contract::spend(&DynamoStore::new(&Aws::from_config(emulator().await), &name), &unique("ci-")).await;
}

#[tokio::test]
async fn the_ec2_adapter_keeps_the_instances_contract() {
    let run_id = RunId::parse(&format!("test-{}-20261123t120000-ab12", unique("ci-"))).unwrap();
    contract::instances(&Ec2Instances::new(&Aws::from_config(emulator().await)), &run_id).await;
}

async fn provisioner_over_emulator(table_name: &str, group: &str) -> Provisioner {
    provisioner_of(Catalog::shipped().unwrap(), table_name, group).await
}

/// A provisioner of `catalog` over the emulator, with its own table and schedule group.
async fn provisioner_of(catalog: Catalog, table_name: &str, group: &str) -> Provisioner {
    let config = emulator().await;
    let ports = ClusterPorts {
        stacks: Arc::new(stacks().await),
        schedules: Arc::new(schedules(group).await),
        locks: Arc::new(DynamoStore::new(&Aws::from_config(config.clone()), table_name)),
        images: Arc::new(EcrImages::new(&Aws::from_config(config.clone()))),
        history: Arc::new(DynamoStore::new(&Aws::from_config(config.clone()), table_name)),
        spend: Arc::new(DynamoStore::new(&Aws::from_config(config.clone()), table_name)),
        logs: Arc::new(provisioner_core::aws::cluster_logs::RunCommandLogs::new(&Aws::from_config(config))),
        notices: Arc::new(NoNotices),
        clock: Arc::new(SystemClock),
    };
    let mut provisioner = Provisioner::new(Arc::new(catalog), ports, local_cluster_settings());
    provisioner.timeouts = Timeouts {
        stack_poll: Duration::from_millis(200),
        lock_poll: Duration::from_millis(100),
        ..Timeouts::default()
    };
    provisioner
}

fn invocation(id: &str) -> Invocation {
    Invocation { request_id: id.into(), deadline: Timestamp::now() + SignedDuration::from_mins(2) }
}

#[tokio::test]
async fn two_deploys_at_once_through_dynamodb_create_one_stack() {
    let (_, table_name) = table().await;
    let group = unique("group-");
    let first = provisioner_over_emulator(&table_name, &group).await;
    // A second process: its own clients, the same table.
    let second = provisioner_over_emulator(&table_name, &group).await;
    let cluster = ClusterName::parse(&unique("ci-")).unwrap();
    let request = ClusterRequest::new(cluster.clone());
    let deploy = DeployRequest { cluster: cluster.clone(), version: None, requested_by: None };
    let (one, two) = (invocation("one"), invocation("two"));
    let (a, b) = tokio::join!(first.deploy(deploy.clone(), &one), second.deploy(deploy.clone(), &two));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.stack_id, b.stack_id, "one stack");

    let at = Timestamp::now() + SignedDuration::from_hours(2);
    let scheduled = first
        .schedule_destroy(
            ScheduleDestroyRequest { cluster: cluster.clone(), time_to_destroy: at, requested_by: None },
            &invocation("three"),
        )
        .await
        .unwrap();
    assert!(scheduled.schedule_name.starts_with(&format!("destroy.{cluster}.")));
    let destroyed = first.destroy(request, &invocation("four")).await.unwrap();
    assert_eq!(destroyed.schedules_removed, vec![scheduled.schedule_name]);
    assert!(first.ports.stacks.describe(&destroyed.stack_name).await.unwrap().is_none());
}

/// The budget over the real adapters: the recount's reads (the month's history by a Scan) count a
/// destroyed cluster's hours, and a profile whose budget is spent (0 here) gets no new cluster.
#[tokio::test]
async fn a_deploy_past_the_budget_creates_nothing_and_the_months_history_counts() {
    let (_, table_name) = table().await;
    let group = unique("group-");
    let yaml = include_str!("../../../clusters/catalog.yaml");
    assert!(yaml.contains("monthly_budget_usd: 750"), "the ci profile's budget moved; follow it here");
    let catalog = Catalog::with_shipped_templates(&yaml.replace("monthly_budget_usd: 750", "monthly_budget_usd: 0"));
    let provisioner = provisioner_of(catalog.unwrap(), &table_name, &group).await;
    let cluster = ClusterName::parse(&unique("ci-")).unwrap();

    // A cluster of this month, destroyed now after two hours (fewer in a month's first two).
    let now = Timestamp::now();
    let created = now - SignedDuration::from_hours(2);
    let destroyed = HistoryEntry {
        operation: "destroy".into(),
        at: now,
        requested_by: None,
        outcome: "success".into(),
        version: None,
        detail: None,
        stack_created_at: Some(created),
    };
    provisioner.ports.history.record(&cluster, &destroyed).await.unwrap();
    let hours = now.duration_since(created.max(start_of_month(now))).as_secs_f64() / 3600.0;
    let profile = provisioner.catalog.profile_for(&cluster).unwrap();
    let rate = profile.hourly_cost(&Default::default(), provisioner.catalog.prices()).unwrap();
    let month = provisioner_core::domain::history::month_of(now);
    let stacks = provisioner.ports.stacks.list("sliderule-cluster-").await.unwrap();
    let history = provisioner.ports.history.month(&month).await.unwrap();
    let sources = SpendSources { now, stacks: &stacks, history: &history, runs: &[] };
    let spend = month_spend(&provisioner.catalog, &sources);
    let ci = spend.iter().find(|spend| spend.profile == "ci").unwrap();
    // At least: other tests' ci clusters stand on the same emulator.
    assert!(ci.clusters_usd >= (rate * hours * 100.0).round() / 100.0 - 0.01, "{ci:?} for {hours} h at {rate}");
    assert!(ci.exhausted());
    assert!(provisioner.ledger.spend().await.unwrap().iter().any(|spend| spend.profile == "ci" && spend.exhausted()));

    let deploy = DeployRequest { cluster: cluster.clone(), version: None, requested_by: None };
    let refused = provisioner.deploy(deploy.clone(), &invocation("budget")).await.unwrap_err();
    assert_eq!(refused.code(), "BudgetExceeded", "{refused}");
    assert!(refused.to_string().contains("of its 0.00 USD budget"), "{refused}");
    assert!(provisioner.ports.stacks.describe(&format!("sliderule-cluster-{cluster}")).await.unwrap().is_none());
    assert_eq!(provisioner.plan_deploy(&deploy).await.unwrap_err().code(), "BudgetExceeded");
    // The refusal is in the cluster's history too.
    let history = provisioner.ports.history.of(&cluster, Timestamp::now(), 50).await.unwrap();
    assert_eq!((history[0].operation.as_str(), history[0].outcome.as_str()), ("deploy", "BudgetExceeded"));
}

#[tokio::test]
async fn the_call_log_records_each_call_once_by_service_and_operation() {
    let aws = Aws::from_config(emulator().await);
    let (stacks, calls) = (CloudFormationStacks::new(&aws), aws.calls);
    let name = unique("sliderule-cluster-calls-");
    assert!(stacks.describe(&name).await.unwrap().is_none());
    assert!(stacks.failure_reasons(&name).await.unwrap().is_empty());
    assert_eq!(calls.take(), vec!["CloudFormation.DescribeStacks", "CloudFormation.DescribeStackEvents"]);
    assert!(calls.take().is_empty(), "take empties the log");
}

#[tokio::test]
async fn the_registry_adapter_reports_exactly_the_repositories_without_the_tag() {
    let config = emulator().await;
    let ecr = aws_sdk_ecr::Client::new(&config);
    let (held, other, absent) = (unique("held-"), unique("other-"), unique("absent-"));
    for repository in [&held, &other] {
        ecr.create_repository().repository_name(repository).send().await.unwrap();
    }
    let manifest = concat!(
        r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","#,
        r#""config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"#,
        r#""digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"layers":[]}"#
    );
    ecr.put_image().repository_name(&held).image_tag("v5.5.0").image_manifest(manifest).send().await.unwrap();
    ecr.put_image().repository_name(&other).image_tag("v5.4.0").image_manifest(manifest).send().await.unwrap();
    let account = ecr.describe_repositories().repository_names(&held).send().await.unwrap().repositories()[0]
        .registry_id()
        .unwrap()
        .to_owned();
    let registry = format!("{account}.dkr.ecr.us-east-1.amazonaws.com");
    let images = EcrImages::new(&Aws::from_config(config));
    let tag = ImageTag::to_deploy(&provisioner_core::domain::GitRef::parse("v5.5.0").unwrap()).unwrap();
    let missing = images.missing(&registry, &[held.clone(), other.clone(), absent.clone()], &tag).await.unwrap();
    assert_eq!(missing, vec![other, absent.clone()]);
    contract::images(&images, &registry, &held, &absent, &tag).await;
    let not_ecr = images.missing("ghcr.io/sliderule", &[held], &tag).await.unwrap_err();
    assert!(not_ecr.to_string().contains("not an Amazon ECR registry"), "{not_ecr}");
}

/// The request guard, proven end to end: a request AWS would refuse (a schedule name over its
/// model's 64 characters), sent through the emulator by a client marked as planting it, is
/// recorded refused; `make test`'s report fails unless it sees it refused.
#[tokio::test]
async fn a_planted_request_aws_would_refuse_is_recorded_refused_by_the_guard() {
    let planted = aws_config::AppName::new("sliderule-guard-planted").unwrap();
    let config = emulator().await.into_builder().app_name(planted).build();
    let client = aws_sdk_scheduler::Client::new(&config);
    let name = format!("{}{}", unique("planted-"), "x".repeat(64));
    let _refused_or_not = client.get_schedule().name(&name).send().await;
    let log = std::fs::read_to_string(provisioner_e2e::local_stack_state().join("aws-requests.jsonl")).unwrap();
    let caught = log.lines().filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()).any(|entry| {
        entry["agent"] == "planted"
            && entry["operation"] == "GetSchedule"
            && entry["findings"].as_array().is_some_and(|findings| !findings.is_empty())
    });
    assert!(caught, "the guard did not record the planted request refused: {log}");
}
