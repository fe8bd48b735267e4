//! The budget: the month's arithmetic on a fixed clock and price table, the refusal of what would
//! add cost (and only that), the sweeper's alerts once a month per level, and status.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use super::budget::{attempt_entry, month_spend, SpendSources};
use crate::catalog::Catalog;
use crate::domain::books::attempt_entry_id;
use crate::domain::{AttemptOutcome, ClusterName, HistoryEntry, RunKind, RunRecord, RunState, StackStatus};
use crate::ports::{Clock, StackSnapshot};
use crate::testing::contract::{attempt, run_record};
use crate::testing::requests::{at, cluster, deploy, start};
use crate::testing::{Call, OpsWorld};

const TEMPLATE: &str = "Parameters:\n  ClusterName: {Type: String}\n  Version: {Type: String}\n  \
    Color: {Type: String, Default: red}\n  Size: {Type: String, Default: '1'}\nResources: {}\n";

/// Two profiles: `small` (s-*) with a budget of 100 USD, clusters of `Size` red (1 USD/h) or blue
/// (3 USD/h) instances, runs on t.run (2 USD/h); `free` (f-*) without a budget.
fn catalog() -> Catalog {
    catalog_with_budget("100")
}

fn catalog_with_budget(small_budget: &str) -> Catalog {
    let profile = |name: &str, pattern: &str, extra: &str| {
        format!(
            "  - {{name: {name}, match: ['{pattern}'], template: t.yaml, version: latest, images: [app], \
             parameters: {{Size: '2'}}, instances: [{{type_parameter: Color, count_parameter: Size}}], \
             runner: {{instance_types: [t.run]}}{extra}}}\n"
        )
    };
    let yaml = format!(
        "profiles:\n{}{}plans:\n  layouts: [{{name: L, present: [x], components: {{}}}}]\n  test: {{steps: [{{name: a, run: \
         'true'}}]}}\n  build: {{steps: [{{name: b, run: 'true'}}]}}\nprices: {{as_of: 2026-11-01, basis: test, hourly_usd: \
         {{red: 1.0, blue: 3.0, t.run: 2.0}}}}\n",
        profile("small", "s-*", &format!(", monthly_budget_usd: {small_budget}")),
        profile("free", "f-*", "")
    );
    Catalog::from_yaml(&yaml, &[("t.yaml", TEMPLATE)]).unwrap()
}

fn stack(cluster: &str, status: &str, created: &str, parameters: &[(&str, &str)]) -> StackSnapshot {
    StackSnapshot {
        name: format!("sliderule-cluster-{cluster}"),
        id: format!("arn:{cluster}"),
        status: StackStatus::new(status),
        status_reason: None,
        parameters: parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        tags: BTreeMap::new(),
        outputs: BTreeMap::new(),
        created_at: Some(at(created)),
    }
}

fn destroyed(cluster_name: &str, at_text: &str, created: &str) -> (ClusterName, HistoryEntry) {
    let entry = HistoryEntry {
        operation: "destroy".into(),
        at: at(at_text),
        requested_by: None,
        outcome: "success".into(),
        version: None,
        detail: None,
        stack_created_at: Some(at(created)),
    };
    (cluster(cluster_name), entry)
}

/// A run of `cluster` whose attempts ran on t.run over each `(from, to)`; `to` None: running.
fn run(cluster_name: &str, attempts: &[(&str, Option<&str>)], ended: Option<&str>) -> RunRecord {
    let mut record = run_record(RunKind::Test, cluster_name, "main", at(attempts[0].0));
    record.attempts = attempts
        .iter()
        .enumerate()
        .map(|(index, (from, to))| {
            let mut attempt = attempt(index as u32 + 1, at(from));
            attempt.instance_type = Some("t.run".into());
            attempt.ended_at = to.map(at);
            attempt.outcome = if to.is_some() { AttemptOutcome::Interrupted } else { AttemptOutcome::Running };
            attempt
        })
        .collect();
    record.state = if ended.is_some() { RunState::Failed } else { RunState::Running };
    record.ended_at = ended.map(at);
    record
}

#[test]
fn the_months_spend_counts_clusters_and_runs_within_the_month_at_their_prices() {
    let catalog = catalog();
    let now = at("2026-12-01T10:00:00Z");
    let stacks = [
        // Up since November at the stack's own values (Size 2, red): 2 USD/h for the 10 hours of December.
        stack("s-1", "CREATE_COMPLETE", "2026-11-30T00:00:00Z", &[("Size", "2")]),
        // Blue and 1: 3 USD/h for 2 hours.
        stack("s-4", "UPDATE_COMPLETE", "2026-12-01T08:00:00Z", &[("Size", "1"), ("Color", "blue")]),
        // A failed create left nothing that bills.
        stack("s-3", "ROLLBACK_COMPLETE", "2026-12-01T00:00:00Z", &[]),
        // Another profile's.
        stack("f-1", "CREATE_COMPLETE", "2026-12-01T09:00:00Z", &[]),
    ];
    let history = [
        // Gone: 3 hours at the profile's instances (Size 2, red: 2 USD/h); the earlier destroy timed out.
        destroyed("s-2", "2026-12-01T03:00:00Z", "2026-12-01T01:00:00Z"),
        destroyed("s-2", "2026-12-01T04:00:00Z", "2026-12-01T01:00:00Z"),
        // Created in November: only December's 2 hours count.
        destroyed("s-5", "2026-12-01T02:00:00Z", "2026-11-20T00:00:00Z"),
        // The stack that still stands: counted once, as standing.
        destroyed("s-1", "2026-12-01T05:00:00Z", "2026-11-30T00:00:00Z"),
    ];
    let runs = [
        // Interrupted across the month's start (1 hour in December), then running since (9 hours).
        run("s-1", &[("2026-11-30T23:00:00Z", Some("2026-12-01T01:00:00Z")), ("2026-12-01T01:00:00Z", None)], None),
        // Failed at 05:00 after an hour; its instance held another hour.
        {
            let mut held =
                run("s-2", &[("2026-12-01T04:00:00Z", Some("2026-12-01T05:00:00Z"))], Some("2026-12-01T05:00:00Z"));
            held.held_until = Some(at("2026-12-01T06:00:00Z"));
            held
        },
        run("f-1", &[("2026-12-01T09:00:00Z", None)], None),
    ];
    let spends = month_spend(&catalog, &SpendSources { now, stacks: &stacks, history: &history, runs: &runs });
    let small = &spends[0];
    assert_eq!((small.profile.as_str(), small.month.as_str()), ("small", "2026-12"));
    // 20 (s-1) + 6 (s-4) + 6 (s-2) + 4 (s-5).
    assert_eq!(small.clusters_usd, 36.0);
    // 2 + 18 (the first run) + 2 + 2 (the held one).
    assert_eq!(small.runs_usd, 24.0);
    assert_eq!((small.spent_usd, small.budget_usd, small.percent_of_budget), (60.0, Some(100.0), Some(60.0)));
    assert!(!small.exhausted());
    assert!(small.alert_levels().is_empty());
    assert_eq!(small.running.len(), 3, "two clusters and the active run: {:?}", small.running);

    let free = &spends[1];
    assert_eq!((free.clusters_usd, free.runs_usd, free.budget_usd, free.percent_of_budget), (2.0, 2.0, None, None));
    assert!(!free.exhausted() && free.alert_levels().is_empty());

    // Later the same month: 80 % at 18:00 (the three standing or running things add 7 USD an hour).
    let later = |hour: i64| now + SignedDuration::from_hours(hour);
    let at_hour = |hour| {
        month_spend(&catalog, &SpendSources { now: later(hour), stacks: &stacks, history: &history, runs: &runs })
            .remove(0)
    };
    assert_eq!(at_hour(3).spent_usd, 81.0);
    assert_eq!(at_hour(3).alert_levels(), [80]);
    assert!(!at_hour(3).exhausted());
    assert_eq!(at_hour(6).spent_usd, 102.0);
    assert_eq!(at_hour(6).alert_levels(), [80, 100]);
    assert!(at_hour(6).exhausted());
    // A new month starts from nothing but what still runs.
    let january = month_spend(
        &catalog,
        &SpendSources { now: at("2027-01-01T01:00:00Z"), stacks: &stacks, history: &history, runs: &runs },
    )
    .remove(0);
    assert_eq!((january.month.as_str(), january.clusters_usd), ("2027-01", 5.0));
}

#[test]
fn a_budget_of_nothing_is_spent_from_the_start() {
    let catalog = catalog_with_budget("0");
    let sources = SpendSources { now: at("2026-12-01T00:00:00Z"), stacks: &[], history: &[], runs: &[] };
    let small = month_spend(&catalog, &sources).remove(0);
    assert_eq!((small.spent_usd, small.budget_usd, small.percent_of_budget), (0.0, Some(0.0), Some(100.0)));
    assert!(small.exhausted(), "a spend of 0 has reached a budget of 0");
    assert_eq!(small.alert_levels(), [80, 100]);
}

/// A run of `cluster_name` that ended at `now` after `hours` on an m7g.2xlarge (0.3264 USD/h).
fn spent_run(cluster_name: &str, now: Timestamp, hours: i64) -> RunRecord {
    let from = now - SignedDuration::from_hours(hours);
    let mut record = run(cluster_name, &[(&from.to_string(), Some(&now.to_string()))], Some(&now.to_string()));
    record.attempts[0].instance_type = Some("m7g.2xlarge".into());
    record
}

/// A run that ended at `now` after `hours` on an m7g.2xlarge, recorded and counted in the books
/// as its launch and its end would.
async fn put_spent_run(ops: &OpsWorld, cluster_name: &str, now: Timestamp, hours: i64) {
    let record = spent_run(cluster_name, now, hours);
    ops.world.runs.put(record.clone());
    let profile = ops.world.provisioner.catalog.profile_for(&record.cluster).unwrap().name.clone();
    let attempt = &record.attempts[0];
    let entry = attempt_entry(&record, attempt.number, "m7g.2xlarge", 0.3264, attempt.started_at);
    let ledger = &ops.world.provisioner.ledger;
    ledger.begin(&profile, entry).await.unwrap();
    ledger.settle(&profile, &attempt_entry_id(record.run_id.as_str(), attempt.number), now, false).await;
}

const LATE_IN_THE_MONTH: &str = "2026-11-28T12:00:00Z";

#[tokio::test(start_paused = true)]
async fn past_the_budget_a_deploy_that_would_create_and_a_new_run_are_refused_and_nothing_else() {
    let ops = OpsWorld::new(LATE_IN_THE_MONTH);
    let now = ops.world.clock.now();
    // Under the developers' 500 USD (600 hours: 195.84 USD): everything starts.
    put_spent_run(&ops, "developers", now, 600).await;
    let invocation = ops.world.invocation("d1");
    ops.world.provisioner.deploy(deploy("developers"), &invocation).await.unwrap();
    let active = ops.runs.runner.run(RunKind::Test, start("developers", "main"), &ops.world.invocation("t1")).await;
    let active = active.unwrap();
    assert!(ops.world.notices.sent().is_empty());

    // Past it (1800 hours: 587.52 USD).
    put_spent_run(&ops, "developers", now, 600).await;
    put_spent_run(&ops, "developers", now, 600).await;
    let launched = ops.runs.instances.launches().len();
    let refused = ops.runs.runner.run(RunKind::Test, start("developers", "v5.5.0"), &ops.world.invocation("t2")).await;
    let error = refused.unwrap_err();
    assert_eq!(error.code(), "BudgetExceeded");
    let message = error.to_string();
    for named in [
        "profile 'developers'",
        "of its 500.00 USD budget",
        "2026-11",
        "cluster developers",
        "v5.5.0",
        "monthly_budget_usd",
    ] {
        assert!(message.contains(named), "{named}: {message}");
    }
    assert!(message.contains(active.run_id.as_str()), "names the active run: {message}");
    assert_eq!(ops.runs.instances.launches().len(), launched, "nothing launched");
    assert!(ops.world.runs.slot_holders("developers", RunKind::Test, now).len() == 1, "its slot was given back");
    // The dry run answers the same.
    let planned = ops.runs.runner.plan(RunKind::Test, &start("developers", "v5.5.0")).await.unwrap_err();
    assert_eq!(planned.code(), "BudgetExceeded");

    // What runs goes on: the same run answers with itself, the running cluster answers success.
    let again = ops.runs.runner.run(RunKind::Test, start("developers", "main"), &ops.world.invocation("t3")).await;
    assert_eq!(again.unwrap().run_id, active.run_id);
    let running = ops.world.provisioner.deploy(deploy("developers"), &ops.world.invocation("d2")).await.unwrap();
    assert_eq!(running.action, super::deploy::DeployAction::AlreadyRunning);

    // A deploy that would create is refused before anything is made; another profile is not limited by it.
    ops.world
        .provisioner
        .destroy(
            crate::domain::ClusterRequest { cluster: cluster("developers"), requested_by: None },
            &ops.world.invocation("x1"),
        )
        .await
        .unwrap();
    let creates = ops.world.stacks.count(|call| matches!(call, Call::CreateStack(_)));
    let refused = ops.world.provisioner.deploy(deploy("developers"), &ops.world.invocation("d3")).await.unwrap_err();
    assert_eq!(refused.code(), "BudgetExceeded");
    assert_eq!(ops.world.stacks.count(|call| matches!(call, Call::CreateStack(_))), creates, "nothing created");
    assert_eq!(ops.world.provisioner.plan_deploy(&deploy("developers")).await.unwrap_err().code(), "BudgetExceeded");
    ops.world.provisioner.deploy(deploy("ci-1"), &ops.world.invocation("d4")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_alerts_at_80_and_100_percent_once_a_month_each_and_status_shows_the_spend() {
    let ops = OpsWorld::new(LATE_IN_THE_MONTH);
    let now = ops.world.clock.now();
    let budget_alerts = || {
        let sent = ops.world.notices.sent();
        sent.into_iter().filter(|(subject, _)| subject.contains("monthly budget")).collect::<Vec<_>>()
    };
    // 1300 hours at 0.3264: 424.32 USD, 84.9 % of 500.
    put_spent_run(&ops, "developers", now, 650).await;
    put_spent_run(&ops, "developers", now, 650).await;
    let status = ops.operations.status().await.unwrap();
    let developers = status.budgets.iter().find(|spend| spend.profile == "developers").unwrap();
    assert_eq!(
        (developers.spent_usd, developers.budget_usd, developers.percent_of_budget),
        (424.32, Some(500.0), Some(84.9))
    );
    assert!(status.sweeper.iter().any(|finding| finding.target.as_str() == "developers"), "{:?}", status.sweeper);
    let ci = status.budgets.iter().find(|spend| spend.profile == "ci").unwrap();
    assert_eq!((ci.spent_usd, ci.budget_usd), (0.0, Some(750.0)));

    let swept = sweep(&ops, "s1").await;
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(swept[0], "alerted at 80%");
    assert_eq!(budget_alerts().len(), 1);
    assert!(budget_alerts()[0].1.contains("424.32 USD of its 500.00 USD budget"), "{:?}", budget_alerts());
    assert!(sweep(&ops, "s2").await.is_empty(), "told once");
    assert_eq!(budget_alerts().len(), 1);

    // Past 100 %: told again, once.
    put_spent_run(&ops, "developers", now, 300).await;
    assert_eq!(sweep(&ops, "s3").await, ["alerted at 100%"]);
    assert!(sweep(&ops, "s4").await.is_empty());
    let alerts = budget_alerts();
    assert_eq!(alerts.len(), 2);
    assert!(alerts[1].0.contains("reached 100%") && alerts[1].1.contains("BudgetExceeded"), "{alerts:?}");

    // A new month starts from what still runs: nothing here, and nothing is due.
    tokio::time::advance(std::time::Duration::from_secs(61 * 3600)).await;
    assert!(sweep(&ops, "s5").await.is_empty());
    let december = ops.operations.status().await.unwrap();
    assert_eq!((december.budgets[0].month.as_str(), december.budgets[0].spent_usd), ("2026-12", 0.0));
}

/// The results of one sweep's actions.
async fn sweep(ops: &OpsWorld, id: &str) -> Vec<String> {
    let swept = ops.operations.sweep(&ops.world.invocation(id)).await.unwrap();
    swept.actions.into_iter().map(|action| action.result).collect()
}

#[tokio::test(start_paused = true)]
async fn the_daily_recount_finds_what_the_books_missed_corrects_it_and_alerts_once() {
    let ops = OpsWorld::new(LATE_IN_THE_MONTH);
    let now = ops.world.clock.now();
    let first = ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap();
    assert_eq!(first.recounts.len(), 2, "every profile on the first day: {:?}", first.recounts);
    assert!(first.recounts.iter().all(|r| r.ok && !r.corrected), "{:?}", first.recounts);
    // A run whose books were never written (a lost write): 100 hours at 0.3264.
    ops.world.runs.put(spent_run("developers", now, 100));
    let missed = ops.operations.status().await.unwrap();
    assert_eq!(missed.budgets.iter().find(|b| b.profile == "developers").unwrap().spent_usd, 0.0);
    let later = ops.operations.sweep(&ops.world.invocation("s2")).await.unwrap();
    assert!(later.recounts.is_empty(), "once a day: {:?}", later.recounts);

    tokio::time::advance(std::time::Duration::from_secs(24 * 3600)).await;
    let next_day = ops.operations.sweep(&ops.world.invocation("s3")).await.unwrap();
    let developers = next_day.recounts.iter().find(|r| r.profile == "developers").unwrap();
    assert!(developers.corrected, "{developers:?}");
    assert!(developers.result.contains("the books said 0.00 USD this month, the records 32.64 USD"), "{developers:?}");
    let alerts: Vec<_> = ops.world.notices.sent().into_iter().filter(|(s, _)| s.contains("books")).collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let status = ops.operations.status().await.unwrap();
    assert_eq!(status.budgets.iter().find(|b| b.profile == "developers").unwrap().spent_usd, 32.64);
}

#[tokio::test(start_paused = true)]
async fn a_recount_keeps_what_was_just_begun_and_drops_it_a_day_later_when_nothing_recorded_it() {
    let ops = OpsWorld::new(LATE_IN_THE_MONTH);
    let now = ops.world.clock.now();
    // A launch begun in the books whose record is not written yet.
    let record = spent_run("developers", now, 1);
    let entry = attempt_entry(&record, 1, "m7g.2xlarge", 0.3264, now);
    ops.world.provisioner.ledger.begin("developers", entry).await.unwrap();
    let first = ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap();
    assert!(first.recounts.iter().all(|r| !r.corrected), "{:?}", first.recounts);
    assert_eq!(ops.world.spend.kept("developers").entries.len(), 1, "kept: it may not be recorded yet");

    tokio::time::advance(std::time::Duration::from_secs(24 * 3600)).await;
    let next_day = ops.operations.sweep(&ops.world.invocation("s2")).await.unwrap();
    let developers = next_day.recounts.iter().find(|r| r.profile == "developers").unwrap();
    assert!(developers.corrected, "{developers:?}");
    assert!(ops.world.spend.kept("developers").entries.is_empty());
}
