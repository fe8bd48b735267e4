//! Every sweeper rule and the status report, on fakes with paused time.

use std::time::Duration;

use jiff::SignedDuration;

use super::sweeper::{findings, SweepAction};
use crate::domain::tags;
use crate::domain::ClusterRequest;
use crate::domain::{AttemptOutcome, RunKind, RunRequest, RunState, StepStatus};
use crate::ports::{Clock, Lease};
use crate::testing::requests::{at, cluster, deploy, start, NOW};
use crate::testing::{Call, Fault, OpsWorld};

async fn pass(minutes: u64) {
    tokio::time::advance(Duration::from_secs(minutes * 60)).await;
}

// The sweeper.

#[tokio::test(start_paused = true)]
async fn an_idle_sweep_lists_five_things_and_does_nothing() {
    let ops = OpsWorld::new(NOW);
    ops.world.stacks.seed("sliderule-cluster-developers", "CREATE_COMPLETE", None);
    ops.world.schedules.insert("destroy.developers.20261123T180000", at("2026-11-23T18:00:00Z"));
    let swept = ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap();
    assert!(swept.actions.is_empty(), "{:?}", swept.actions);
    assert_eq!((swept.surveyed.clusters, swept.surveyed.schedules), (1, 1));
    // The survey's listing, and the first day's recount of the books, for every profile at once.
    let listed = [Call::ListStacks("sliderule-cluster-".into())];
    assert_eq!(ops.world.stacks.calls(), [listed.clone(), listed.clone()].concat());
    assert_eq!(swept.recounts.len(), 2, "{:?}", swept.recounts);
    assert_eq!(ops.world.schedules.calls(), [Call::ListSchedules("destroy.".into())]);
    assert!(ops.world.notices.sent().is_empty(), "nothing to report, no alert");
    let again = ops.operations.sweep(&ops.world.invocation("s2")).await.unwrap();
    assert!(again.actions.is_empty() && again.recounts.is_empty(), "{again:?}");
    assert_eq!(ops.world.stacks.calls().len(), 3, "the next sweep lists once");
}

/// A start that failed between its two writes leaves a live run with no record: the daily sweep
/// takes it out once it is an hour old, and not before.
#[tokio::test(start_paused = true)]
async fn a_live_run_whose_record_was_never_written_is_taken_out_by_the_daily_sweep() {
    let ops = OpsWorld::new(NOW);
    // Every try of the start, as the runner retries it.
    ops.world.faults.script("PutRun", Fault::ServerError, 10);
    let failed = ops.runs.runner.run(RunKind::Test, start("ci-1", "main"), &ops.world.invocation("r1")).await;
    assert!(failed.is_err(), "{failed:?}");
    let unrecorded = ops.runs.runs.live_ids();
    assert_eq!((unrecorded.len(), ops.runs.runs.count()), (1, 0), "live, with no record: {unrecorded:?}");
    let first = ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap();
    assert!(!first.recounts.is_empty(), "the day's work is due");
    assert_eq!(ops.runs.runs.live_ids(), unrecorded, "a start of a moment ago may still write its record");
    pass(24 * 60).await;
    let next_day = ops.operations.sweep(&ops.world.invocation("s2")).await.unwrap();
    assert!(!next_day.recounts.is_empty(), "the next day's work is due");
    assert!(ops.runs.runs.live_ids().is_empty(), "taken out: {:?}", ops.runs.runs.live_ids());
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_terminates_instances_past_their_time_of_ended_missing_or_other_runs() {
    let ops = OpsWorld::new(NOW);
    let instances = &ops.runs.instances;
    let runner = &ops.runs.runner;
    let ended = runner.run(RunKind::Test, start("ci-1", "main"), &ops.world.invocation("r1")).await.unwrap();
    ops.runs.runs.report(&ended.run_id, &[], Some("succeeded"));
    runner
        .run(
            RunKind::Test,
            RunRequest::Resume { run_id: ended.run_id.clone(), wait_seconds: Some(0) },
            &ops.world.invocation("r2"),
        )
        .await
        .unwrap();
    let active = runner.run(RunKind::Test, start("ci-2", "main"), &ops.world.invocation("r3")).await.unwrap();
    let kept = active.instance_id.clone().unwrap();

    fn tagged<'a>(run: &'a str, expires: &'a str) -> [(&'a str, &'a str); 4] {
        [(tags::PROVISIONER, "true"), (tags::KIND, "test"), (tags::RUN_ID, run), (tags::EXPIRES, expires)]
    }
    let later = "2026-11-23T20:00:00Z";
    instances.put("i-ended", "c7g.2xlarge", &tagged(ended.run_id.as_str(), later));
    instances.put("i-second", "c7g.2xlarge", &tagged(active.run_id.as_str(), later));
    instances.put("i-expired", "c7g.2xlarge", &tagged(active.run_id.as_str(), "2026-11-23T11:59:00Z"));
    instances.put("i-orphan", "c7g.2xlarge", &tagged("test-ci-9-20261101t000000-ab12", later));
    instances.put("i-untagged", "c7g.2xlarge", &[(tags::RUN_ID, "test-ci-9-20261101t000000-ab12")]);
    // Within the launch grace an instance whose run is not found yet is left alone.
    let fresh = ops.operations.sweep(&ops.world.invocation("s0")).await.unwrap();
    let terminated: Vec<&str> = fresh.actions.iter().map(|a| a.finding.target.as_str()).collect();
    assert_eq!(terminated, ["i-ended", "i-expired", "i-second"], "{:?}", fresh.actions);
    pass(4).await;
    let swept = ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap();
    let reasons: Vec<(&str, &str)> =
        swept.actions.iter().map(|a| (a.finding.target.as_str(), a.finding.reason.as_str())).collect();
    assert_eq!(reasons, [("i-orphan", "its run test-ci-9-20261101t000000-ab12 does not exist")]);
    let live = |id: &str| instances.instances()[id].live();
    assert!(!live("i-ended") && !live("i-second") && !live("i-expired") && !live("i-orphan"));
    assert!(live(&kept) && live("i-untagged"), "the run's own instance and what is not the provisioner's stay");
    let reasons: Vec<String> = fresh.actions.iter().map(|a| a.finding.reason.clone()).collect();
    assert!(reasons[0].contains("ended as succeeded"), "{reasons:?}");
    assert!(reasons[1].contains("time limit passed"), "{reasons:?}");
    assert!(
        reasons[2].contains(&format!("second instance of run {}, which runs on {kept}", active.run_id)),
        "{reasons:?}"
    );
}

/// CloudFormation copies a stack's tags (the provisioner's among them) onto its instances; the
/// sweeper's instance rules are for runs' instances, so a cluster stands beside every sweep.
#[tokio::test(start_paused = true)]
async fn a_clusters_own_instances_survive_every_sweep_while_it_stands_and_go_with_it() {
    let ops = OpsWorld::new(NOW);
    let invocation = ops.world.invocation("d1");
    ops.world.provisioner.deploy(deploy("ci-standing"), &invocation).await.unwrap();
    let stack = "sliderule-cluster-ci-standing";
    let instances = &ops.runs.instances;
    let of_stack = || -> Vec<String> {
        let all = instances.instances();
        all.into_iter()
            .filter(|(_, i)| i.live() && i.tag(tags::CLOUDFORMATION_STACK) == Some(stack))
            .map(|(id, _)| id)
            .collect()
    };
    let launched = of_stack();
    assert_eq!(launched.len(), 3, "the fake CloudFormation launched the stack's instances");
    assert!(instances.instances()[&launched[0]].tag(tags::PROVISIONER) == Some("true"), "with the stack's tags");
    // Its four hours (the profile's default lifetime) of sweeps every ten minutes, past the launch
    // grace many times over; the schedule does not fire here.
    for minute in (10..=260).step_by(10) {
        pass(10).await;
        let swept = ops.operations.sweep(&ops.world.invocation(&format!("s{minute}"))).await.unwrap();
        let ended: Vec<_> =
            swept.actions.iter().filter(|a| a.finding.action == SweepAction::TerminateInstance).collect();
        assert!(ended.is_empty(), "minute {minute}: {ended:?}");
    }
    assert_eq!(of_stack(), launched, "the same instances stand");
    assert!(instances.stack_instances_ended(stack).is_empty());
    // Its destroy schedule overdue, it goes as a whole stack.
    pass(10).await;
    let swept = ops.operations.sweep(&ops.world.invocation("s-last")).await.unwrap();
    assert_eq!(swept.actions.iter().map(|a| a.finding.action).collect::<Vec<_>>(), [SweepAction::DestroyCluster]);
    assert!(of_stack().is_empty(), "its delete ended its instances");
}

/// The fake is the cloud: an Auto Scaling group replaces a node terminated while its stack stands.
#[tokio::test(start_paused = true)]
async fn a_terminated_node_of_a_standing_cluster_is_replaced_as_auto_scaling_does() {
    let ops = OpsWorld::new(NOW);
    ops.world.stacks.seed("sliderule-cluster-ci-a", "CREATE_COMPLETE", None);
    let instances = &ops.runs.instances;
    let node = |all: &std::collections::BTreeMap<String, crate::testing::FakeInstance>| -> Vec<String> {
        all.iter()
            .filter(|(_, i)| i.live() && i.tag(tags::AUTO_SCALING_GROUP).is_some())
            .map(|(id, _)| id.clone())
            .collect()
    };
    let first = node(&instances.instances());
    crate::ports::Instances::terminate(&**instances, &first[0]).await.unwrap();
    let now = node(&instances.instances());
    assert_eq!(now.len(), 1);
    assert_ne!(now, first, "a new node replaced it");
    assert_eq!(instances.stack_instances_ended("sliderule-cluster-ci-a"), first);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_begins_the_next_attempt_of_a_run_whose_instance_is_gone() {
    let ops = OpsWorld::new(NOW);
    let run = ops.runs.runner.run(RunKind::Test, start("ci-1", "main"), &ops.world.invocation("r1")).await.unwrap();
    ops.runs.instances.set_state(run.instance_id.as_deref().unwrap(), None);
    let swept = ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap();
    assert_eq!(swept.actions.len(), 1, "{:?}", swept.actions);
    let action = &swept.actions[0];
    assert_eq!((action.finding.action, action.finding.target.as_str()), (SweepAction::ResumeRun, run.run_id.as_str()));
    let record = ops.runs.runs.record(&run.run_id).unwrap();
    let next = record.instance_id.clone().unwrap();
    assert_eq!(action.result, format!("began attempt 2 on {next}"));
    assert_eq!((record.state, record.attempts[0].outcome), (RunState::Running, AttemptOutcome::Lost));
    let subjects: Vec<String> = ops.world.notices.sent().into_iter().map(|(subject, _)| subject).collect();
    assert_eq!(subjects, ["SlideRule provisioner: the sweeper acted on 1 thing(s)"]);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_concludes_a_reported_run_and_adopts_a_lost_track_instance() {
    let ops = OpsWorld::new(NOW);
    let runner = &ops.runs.runner;
    let reported = runner.run(RunKind::Test, start("ci-1", "main"), &ops.world.invocation("r1")).await.unwrap();
    ops.runs.runs.report(&reported.run_id, &[("checkout", StepStatus::Failed)], Some("failed"));
    // A run whose instance was launched but never recorded.
    // Two writes of its instance fail (each after the SDK's retries); its answer comes due before
    // the third.
    ops.world.faults.script("UpdateRun", Fault::ServerError, 2);
    let untracked = runner.run(RunKind::Test, start("ci-2", "main"), &ops.world.invocation("r2")).await.unwrap();
    assert_eq!(ops.runs.runs.record(&untracked.run_id).unwrap().instance_id, None);
    pass(4).await;

    let swept = ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap();
    let results: Vec<(&str, &str)> =
        swept.actions.iter().map(|a| (a.finding.target.as_str(), a.result.as_str())).collect();
    let launched = &ops.runs.instances.launches();
    let adopted = ops.runs.runs.record(&untracked.run_id).unwrap().instance_id.unwrap();
    assert_eq!(launched.len(), 2);
    assert_eq!(
        results,
        [
            (reported.run_id.as_str(), "ended as failed"),
            (untracked.run_id.as_str(), format!("adopted instance {adopted}").as_str())
        ]
    );
    assert_eq!(ops.runs.runs.record(&reported.run_id).unwrap().state, RunState::Failed);
    // Fixed is fixed: the next sweep finds nothing.
    assert!(ops.operations.sweep(&ops.world.invocation("s2")).await.unwrap().actions.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_destroys_a_cluster_past_its_maximum_lifetime_with_no_schedule() {
    let ops = OpsWorld::new(NOW);
    let stacks = &ops.world.stacks;
    stacks.seed("sliderule-cluster-ci-old", "CREATE_COMPLETE", None);
    stacks.seed("sliderule-cluster-ci-kept", "CREATE_COMPLETE", None);
    ops.world.schedules.insert("destroy.ci-kept.20261124T060000", at("2026-11-24T06:00:00Z"));
    pass(60).await;
    stacks.seed("sliderule-cluster-ci-young", "CREATE_COMPLETE", None);
    pass(660).await;
    // ci-old is 12 hours old with no schedule; ci-kept is as old but scheduled; ci-young is 11 hours old.
    let catalog = &ops.world.provisioner.catalog;
    let survey = ops.operations.survey().await.unwrap();
    let found = findings(catalog, &survey);
    assert_eq!(found.iter().map(|f| f.target.as_str()).collect::<Vec<_>>(), ["ci-old"]);
    assert!(found[0].reason.contains("older than the 'ci' profile's maximum lifetime of 720 minutes"), "{found:?}");

    let swept = ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap();
    assert_eq!(swept.actions.len(), 1);
    assert!(swept.actions[0].ok && swept.actions[0].result.starts_with("destroyed"), "{:?}", swept.actions);
    assert_eq!(stacks.status("sliderule-cluster-ci-old"), None);
    assert!(
        stacks.status("sliderule-cluster-ci-kept").is_some() && stacks.status("sliderule-cluster-ci-young").is_some()
    );
    assert_eq!(ops.world.locks.holder("ci-old"), None, "the destroy's lock was released");
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_destroys_a_cluster_whose_schedule_is_long_overdue() {
    let ops = OpsWorld::new(NOW);
    ops.world.stacks.seed("sliderule-cluster-developers", "CREATE_COMPLETE", None);
    // Its schedule fired at 12:10 and the destroy failed; the schedule stayed (say, a retry policy).
    ops.world.schedules.insert("destroy.developers.20261123T121000", at("2026-11-23T12:10:00Z"));
    pass(30).await;
    assert!(ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap().actions.is_empty(), "not yet overdue");
    pass(15).await;
    let swept = ops.operations.sweep(&ops.world.invocation("s2")).await.unwrap();
    assert_eq!(swept.actions[0].finding.reason, "its destroy was due at 2026-11-23T12:10:00Z and it still exists");
    assert_eq!(ops.world.stacks.status("sliderule-cluster-developers"), None);
    assert!(ops.world.schedules.all().is_empty(), "destroy removes the cluster's schedules");
}

#[tokio::test(start_paused = true)]
async fn a_cluster_the_sweeper_cannot_destroy_is_a_failed_action_and_nothing_else_stops() {
    let ops = OpsWorld::new(NOW);
    ops.world.stacks.seed("sliderule-cluster-ci-old", "CREATE_COMPLETE", None);
    ops.world.stacks.seed("sliderule-cluster-other", "CREATE_COMPLETE", None);
    pass(721).await;
    // Another operation holds the cluster for longer than the sweep may wait.
    let now = ops.world.clock.now();
    let holder = Lease {
        owner: "someone".into(),
        operation: "deploy".into(),
        acquired_at: now,
        expires_at: now + SignedDuration::from_hours(1),
    };
    ops.world.locks.put("ci-old", holder);
    let swept = ops.operations.sweep(&ops.world.invocation_with("s1", Duration::from_secs(60))).await.unwrap();
    let outcomes: Vec<(SweepAction, &str, bool)> =
        swept.actions.iter().map(|a| (a.finding.action, a.finding.target.as_str(), a.ok)).collect();
    assert_eq!(outcomes, [(SweepAction::DestroyCluster, "ci-old", false), (SweepAction::Report, "other", true)]);
    assert!(swept.actions[0].result.contains("(Busy)"), "{}", swept.actions[0].result);
    assert!(ops.world.stacks.status("sliderule-cluster-other").is_some(), "a stack no profile matches is left alone");
}

#[tokio::test(start_paused = true)]
async fn a_sweep_and_a_destroy_at_once_leave_one_outcome() {
    let ops = OpsWorld::new(NOW);
    ops.world.stacks.seed("sliderule-cluster-ci-old", "CREATE_COMPLETE", None);
    pass(721).await;
    let provisioner = &ops.world.provisioner;
    let (one, two) = (ops.world.invocation("d1"), ops.world.invocation("s1"));
    let destroy = provisioner.destroy(ClusterRequest::new(cluster("ci-old")), &one);
    let (destroyed, swept) = tokio::join!(destroy, ops.operations.sweep(&two));
    destroyed.unwrap();
    assert!(swept.unwrap().actions.iter().all(|a| a.ok), "the second destroy finds it absent");
    assert_eq!(ops.world.stacks.status("sliderule-cluster-ci-old"), None);
    assert_eq!(ops.world.stacks.count(|c| matches!(c, Call::DeleteStack(_))), 1, "deleted once");
}

// Status.

#[tokio::test(start_paused = true)]
async fn status_lists_clusters_with_costs_runs_with_progress_and_what_the_sweeper_would_do() {
    let ops = OpsWorld::new(NOW);
    ops.world.provisioner.deploy(deploy("ci-1"), &ops.world.invocation("r1")).await.unwrap();
    let run = ops.runs.runner.run(RunKind::Test, start("ci-1", "main"), &ops.world.invocation("r2")).await.unwrap();
    ops.runs.runs.report(
        &run.run_id,
        &[("checkout", StepStatus::Passed), ("install-tools", StepStatus::Running)],
        None,
    );
    let failed =
        ops.runs.runner.run(RunKind::Build, start("ci-1", "v5.1.0"), &ops.world.invocation("r3")).await.unwrap();
    ops.runs.runs.report(&failed.run_id, &[("build-images", StepStatus::Failed)], Some("failed"));
    let resume = RunRequest::Resume { run_id: failed.run_id.clone(), wait_seconds: Some(0) };
    ops.runs.runner.run(RunKind::Build, resume, &ops.world.invocation("r4")).await.unwrap_err();
    ops.runs.instances.put(
        "i-stray",
        "c7g.2xlarge",
        &[(tags::PROVISIONER, "true"), (tags::KIND, "test"), (tags::EXPIRES, "2026-11-23T11:00:00Z")],
    );
    pass(120).await;

    let status = ops.operations.status().await.unwrap();
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["status"], "success");
    let clusters = json["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 1);
    let ci = &clusters[0];
    assert_eq!(
        (ci["cluster"].as_str(), ci["profile"].as_str(), ci["version"].as_str()),
        (Some("ci-1"), Some("ci"), Some("latest"))
    );
    assert_eq!(ci["time_to_destroy"], "2026-11-23T16:01:32Z");
    // Two c8g.large at 0.0798 and one t4g.2xlarge at 0.2688, since 12:00 (2 h 1.5 min).
    assert_eq!(ci["cost_per_hour_usd"], 0.43);
    assert_eq!(ci["cost_so_far_usd"], 0.87);

    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let active = &runs[0];
    assert_eq!(active["run_id"], run.run_id.as_str());
    assert_eq!((active["steps_done"].as_u64(), active["current_step"].as_str()), (Some(1), Some("install-tools")));
    assert_eq!(active["steps_total"].as_u64(), Some(run.steps.len() as u64));
    assert_eq!((active["instance_type"].as_str(), active["age_minutes"].as_i64()), (Some("m7g.2xlarge"), Some(120)));
    assert_eq!(active["cost_so_far_usd"], 0.65, "two hours of m7g.2xlarge at 0.3264");

    let recent = json["recent_runs"].as_array().unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(
        (recent[0]["state"].as_str(), recent[0]["failed_steps"][0].as_str()),
        (Some("failed"), Some("build-images"))
    );
    let sweeper = json["sweeper"].as_array().unwrap();
    assert_eq!(sweeper.len(), 1, "{sweeper:?}");
    assert_eq!(
        (sweeper[0]["action"].as_str(), sweeper[0]["target"].as_str()),
        (Some("terminate_instance"), Some("i-stray"))
    );
    assert_eq!(json["prices"]["as_of"], "2026-11-25");
    assert!(ops.runs.instances.instances()["i-stray"].live(), "status changes nothing");
}

#[tokio::test(start_paused = true)]
async fn two_sweeps_at_once_do_each_thing_once() {
    let ops = OpsWorld::new(NOW);
    ops.world.stacks.seed("sliderule-cluster-ci-old", "CREATE_COMPLETE", None);
    let run = ops.runs.runner.run(RunKind::Test, start("ci-1", "main"), &ops.world.invocation("r1")).await.unwrap();
    ops.runs.instances.set_state(run.instance_id.as_deref().unwrap(), None);
    pass(721).await;
    let (one, two) = (ops.world.invocation("s1"), ops.world.invocation("s2"));
    let (first, second) = tokio::join!(ops.operations.sweep(&one), ops.operations.sweep(&two));
    for swept in [first.unwrap(), second.unwrap()] {
        assert!(swept.actions.iter().all(|a| a.ok), "{:?}", swept.actions);
    }
    assert_eq!(ops.world.stacks.count(|c| matches!(c, Call::DeleteStack(_))), 1, "deleted once");
    assert_eq!(ops.world.stacks.status("sliderule-cluster-ci-old"), None);
    // Its instance vanished, but nobody looked before its time limit: it timed out.
    assert_eq!(ops.runs.runs.record(&run.run_id).unwrap().state, RunState::TimedOut);
    let lost: Vec<_> =
        ops.world.notices.sent().into_iter().filter(|(subject, _)| subject.contains("RunTimedOut")).collect();
    assert_eq!(lost.len(), 1, "one run, one ending, one alert: {lost:?}");
}

#[tokio::test(start_paused = true)]
async fn what_the_sweeper_only_reports_sends_no_alert() {
    let ops = OpsWorld::new(NOW);
    ops.world.stacks.seed("sliderule-cluster-other", "CREATE_COMPLETE", None);
    let swept = ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap();
    let reported: Vec<(SweepAction, &str)> =
        swept.actions.iter().map(|a| (a.finding.action, a.finding.target.as_str())).collect();
    assert_eq!(reported, [(SweepAction::Report, "other")]);
    assert!(ops.world.notices.sent().is_empty(), "it would repeat every 10 minutes");
}

/// Who asked is recorded on what each call creates (the stack's tags, the schedule, the run
/// record, the instance's and volume's tags) and `status` shows it.
#[tokio::test(start_paused = true)]
async fn who_asked_is_recorded_on_what_each_call_creates_and_status_shows_it() {
    use crate::domain::{DeployRequest, GitRef, RequestedBy, ScheduleDestroyRequest};
    let ops = OpsWorld::new(NOW);
    let who = |name: &str| Some(RequestedBy::parse(name).unwrap());
    let deploy = DeployRequest { cluster: cluster("ci-1"), version: None, requested_by: who("ana@example.org") };
    ops.world.provisioner.deploy(deploy, &ops.world.invocation("d1")).await.unwrap();
    let created = ops.world.stacks.created();
    assert!(created[0].tags.contains(&(tags::REQUESTED_BY.into(), "ana@example.org".into())), "{:?}", created[0].tags);

    let status = ops.operations.status().await.unwrap();
    let listed = &status.clusters[0];
    assert_eq!(listed.requested_by.as_deref(), Some("ana@example.org"));
    assert_eq!(listed.destroy_requested_by.as_deref(), Some("ana@example.org"), "the default schedule is hers");

    let later = ops.world.clock.now() + SignedDuration::from_hours(2);
    let schedule = ScheduleDestroyRequest {
        cluster: cluster("ci-1"),
        time_to_destroy: crate::domain::time::whole_seconds(later),
        requested_by: who("ben"),
    };
    ops.world.provisioner.schedule_destroy(schedule, &ops.world.invocation("s1")).await.unwrap();
    let start = RunRequest::Start {
        cluster: cluster("ci-1"),
        version: GitRef::parse("main").unwrap(),
        wait_seconds: Some(0),
        hold_minutes: 0,
        requested_by: who("octocat+run-42"),
    };
    let run = ops.runs.runner.run(RunKind::Test, start, &ops.world.invocation("t1")).await.unwrap();
    assert_eq!(run.requested_by.as_ref().map(RequestedBy::as_str), Some("octocat+run-42"));
    let record = ops.runs.runs.record(&run.run_id).unwrap();
    assert_eq!(record.requested_by.as_ref().map(RequestedBy::as_str), Some("octocat+run-42"));
    let launched: std::collections::BTreeMap<_, _> = ops.runs.instances.launches()[0].tags.iter().cloned().collect();
    assert_eq!(launched[tags::REQUESTED_BY], "octocat+run-42", "on the instance and its volume");

    let status = ops.operations.status().await.unwrap();
    assert_eq!(status.clusters[0].destroy_requested_by.as_deref(), Some("ben"));
    assert_eq!(status.runs[0].requested_by.as_ref().map(RequestedBy::as_str), Some("octocat+run-42"));
}

/// Every operation on a cluster lands in its history, newest first: who asked, the outcome, the
/// version; a fired schedule and the sweeper are named; `status {"cluster"}` shows that cluster
/// alone with its history, and a name no profile matches is `UnknownCluster`.
#[tokio::test(start_paused = true)]
async fn every_operation_on_a_cluster_is_in_its_history_and_status_of_the_cluster_shows_it() {
    use crate::domain::{DeployRequest, GitRef, RequestedBy};
    let ops = OpsWorld::new(NOW);
    let provisioner = &ops.world.provisioner;
    let ana = RequestedBy::parse("ana@example.org").ok();
    let deploy = DeployRequest { cluster: cluster("ci-1"), version: None, requested_by: ana.clone() };
    provisioner.deploy(deploy, &ops.world.invocation("d1")).await.unwrap();
    let pinned = DeployRequest {
        cluster: cluster("ci-1"),
        version: Some(GitRef::parse("v0.0.1").unwrap()),
        requested_by: ana.clone(),
    };
    // Already running: success, whatever version was asked.
    provisioner.deploy(pinned, &ops.world.invocation("d2")).await.unwrap();
    provisioner
        .deploy(
            DeployRequest { cluster: cluster("ci-2"), version: None, requested_by: None },
            &ops.world.invocation("d3"),
        )
        .await
        .unwrap();
    // The default schedule fires (the emulator never does; its event is the destroy's).
    pass(241).await;
    provisioner.destroy(ClusterRequest::new(cluster("ci-1")), &ops.world.invocation("fired")).await.unwrap();

    let status = ops.operations.status_of_cluster(Some(cluster("ci-1"))).await.unwrap();
    assert!(status.clusters.is_empty(), "it no longer runs: {:?}", status.clusters);
    let history = status.history.expect("a cluster's status has its history");
    let seen: Vec<(&str, Option<&str>, &str)> =
        history.iter().map(|e| (e.operation.as_str(), e.requested_by.as_deref(), e.outcome.as_str())).collect();
    assert_eq!(
        seen,
        [
            ("destroy", None, "success"),
            ("deploy", Some("ana@example.org"), "success"),
            ("deploy", Some("ana@example.org"), "success")
        ],
        "newest first, ci-2's are not ci-1's"
    );
    assert!(history[0].detail.as_deref().unwrap().contains("fired by schedule destroy.ci-1."), "{:?}", history[0]);
    assert!(history[2].detail.as_deref().unwrap().starts_with("created; destroy scheduled at "), "{:?}", history[2]);
    assert_eq!(history[1].detail.as_deref(), Some("already_running"));
    assert_eq!(history[2].version.as_deref(), Some("latest"));

    // The sweeper names itself; ci-2 is past its profile's lifetime with no schedule.
    for name in ops.world.schedules.all().into_keys() {
        crate::ports::Schedules::delete(&*ops.world.schedules, &name).await.unwrap();
    }
    pass(12 * 60).await;
    ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap();
    let status = ops.operations.status_of_cluster(Some(cluster("ci-2"))).await.unwrap();
    let newest = &status.history.unwrap()[0];
    assert_eq!((newest.operation.as_str(), newest.requested_by.as_deref()), ("destroy", Some("sweeper")));

    let unknown = ops.operations.status_of_cluster(Some(cluster("nobody"))).await.unwrap_err();
    assert_eq!(unknown.code(), "UnknownCluster");
    // The whole account's status has no history.
    assert!(ops.operations.status().await.unwrap().history.is_none());
}

/// Thirty minutes before a cluster's destroy schedule fires, whoever made it (and the alert
/// topic) is told once, with the command that moves it; rescheduling re-arms the warning.
#[tokio::test(start_paused = true)]
async fn the_sweeper_warns_once_before_a_scheduled_destroy_and_again_after_a_reschedule() {
    use crate::domain::{DeployRequest, RequestedBy, ScheduleDestroyRequest};
    let ops = OpsWorld::new(NOW);
    let provisioner = &ops.world.provisioner;
    let deploy = DeployRequest {
        cluster: cluster("ci-1"),
        version: None,
        requested_by: RequestedBy::parse("ana@example.org").ok(),
    };
    provisioner.deploy(deploy, &ops.world.invocation("d1")).await.unwrap();
    let warned = |swept: &super::sweeper::SweepResponse| {
        swept.actions.iter().filter(|a| a.finding.action == SweepAction::WarnDestroy).count()
    };
    // The default schedule fires 240 minutes after the deploy: not yet within 30 minutes.
    pass(205).await;
    assert_eq!(warned(&ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap()), 0);
    pass(10).await;
    let swept = ops.operations.sweep(&ops.world.invocation("s2")).await.unwrap();
    assert_eq!(warned(&swept), 1, "{:?}", swept.actions);
    assert_eq!(swept.actions[0].result, "warned ana@example.org and the alert topic");
    let told = ops.world.notices.sent_for();
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].1, "ana@example.org");
    let (subject, message) = ops.world.notices.sent().last().cloned().unwrap();
    assert!(subject.contains("ci-1 will be destroyed in"), "{subject}");
    assert!(message.contains("make cluster-schedule-destroy CLUSTER=ci-1 TTL="), "{message}");
    // Once: the next sweep sends nothing.
    pass(10).await;
    let again = ops.operations.sweep(&ops.world.invocation("s3")).await.unwrap();
    assert_eq!((warned(&again), ops.world.notices.sent_for().len()), (0, 1));

    // Rescheduled: warned again, 30 minutes before the new time, whoever made it.
    let later = crate::domain::time::whole_seconds(ops.world.clock.now() + SignedDuration::from_mins(45));
    let schedule = ScheduleDestroyRequest {
        cluster: cluster("ci-1"),
        time_to_destroy: later,
        requested_by: RequestedBy::parse("ben").ok(),
    };
    provisioner.schedule_destroy(schedule, &ops.world.invocation("r1")).await.unwrap();
    assert_eq!(warned(&ops.operations.sweep(&ops.world.invocation("s4")).await.unwrap()), 0);
    pass(20).await;
    assert_eq!(warned(&ops.operations.sweep(&ops.world.invocation("s5")).await.unwrap()), 1);
    assert_eq!(ops.world.notices.sent_for().last().unwrap().1, "ben");
    let history = ops.world.history.all("ci-1");
    assert_eq!(history.iter().filter(|e| e.operation == "destroy_warning").count(), 2);
    // Warnings are their own messages: no sweep summary was sent for them.
    assert!(ops.world.notices.sent().iter().all(|(subject, _)| !subject.contains("the sweeper acted")));
}

/// A warning whose sending failed is claimed but not confirmed: the next sweep sends it, once.
#[tokio::test(start_paused = true)]
async fn a_warning_that_could_not_be_sent_is_sent_by_the_next_sweep() {
    let ops = OpsWorld::new(NOW);
    ops.world.provisioner.deploy(deploy("ci-1"), &ops.world.invocation("d1")).await.unwrap();
    let warned = |swept: &super::sweeper::SweepResponse| -> Vec<bool> {
        swept.actions.iter().filter(|a| a.finding.action == SweepAction::WarnDestroy).map(|a| a.ok).collect()
    };
    pass(215).await;
    ops.world.faults.script("Publish", Fault::Throttled, 1);
    let failed = ops.operations.sweep(&ops.world.invocation("s1")).await.unwrap();
    assert_eq!(warned(&failed), [false], "{:?}", failed.actions);
    assert!(ops.world.notices.sent().iter().all(|(subject, _)| !subject.contains("will be destroyed")));
    pass(10).await;
    let sent = ops.operations.sweep(&ops.world.invocation("s2")).await.unwrap();
    assert_eq!(warned(&sent), [true], "{:?}", sent.actions);
    pass(10).await;
    let again = ops.operations.sweep(&ops.world.invocation("s3")).await.unwrap();
    assert!(warned(&again).is_empty(), "sent once: {:?}", again.actions);
    let warnings = ops.world.notices.sent().iter().filter(|(subject, _)| subject.contains("will be destroyed")).count();
    assert_eq!(warnings, 1);
}
