//! A day in the life on fakes that behave like the cloud (paused time): eight hours in ten-minute
//! steps in which clusters stand (their stacks own instances, one an Auto Scaling group's) beside
//! TEST and BUILD runs, enough starts to fill a cap, a spot interruption (EC2 reclaims the
//! instance two minutes after its warning), a held run, a cancelled run, a hung run whose deadman
//! shuts it down at its limit, a warning before a scheduled destroy and the destroy it fires,
//! EventBridge delivering every event twice, and a sweep every step. The invariants hold after
//! every step.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::sweeper::SweepAction;
use crate::domain::StepStatus;
use crate::domain::{tags, ClusterRequest, GitRef, RunId, RunKind, RunRequest, RunState, ScheduleDestroyRequest};
use crate::ports::Clock;
use crate::testing::requests::{cluster, deploy, NOW};
use crate::testing::OpsWorld;

fn start(name: &str, hold_minutes: u32) -> RunRequest {
    RunRequest::Start {
        cluster: cluster(name),
        version: GitRef::parse("main").unwrap(),
        wait_seconds: Some(0),
        hold_minutes,
        requested_by: None,
    }
}

struct Day {
    ops: OpsWorld,
    /// Every run started, by name, with the state it must end in.
    runs: BTreeMap<&'static str, (RunId, RunState)>,
    standing: Vec<String>,
}

impl Day {
    fn run_id(&self, name: &str) -> RunId {
        self.runs[name].0.clone()
    }

    async fn start(&mut self, name: &'static str, kind: RunKind, cluster: &str, hold: u32, ends: RunState) {
        let invocation = self.ops.world.invocation(name);
        let started = self.ops.runs.runner.run(kind, start(cluster, hold), &invocation).await.unwrap();
        self.runs.insert(name, (started.run.run_id, ends));
    }

    /// Plays the instance: every step reported, the first `failing` failed, and the outcome.
    fn finish(&self, name: &str, failing: usize) {
        let run_id = self.run_id(name);
        let runs = &self.ops.runs.runs;
        let names: Vec<String> = runs.record(&run_id).unwrap().steps.iter().map(|s| s.name.clone()).collect();
        let steps: Vec<(&str, StepStatus)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), if i < failing { StepStatus::Failed } else { StepStatus::Passed }))
            .collect();
        runs.report(&run_id, &steps, Some(if failing > 0 { "failed" } else { "succeeded" }));
    }

    fn instance_of(&self, name: &str) -> String {
        self.ops.runs.runs.record(&self.run_id(name)).unwrap().instance_id.unwrap()
    }

    /// EventBridge: what EC2 sent by now, each delivered twice. Then every run's new instance
    /// boots and checks in (its first report), as a real one does within minutes.
    async fn deliver(&self) {
        for event in self.ops.runs.instances.due_events() {
            for _ in 0..2 {
                self.ops.runs.runner.instance_event(event.clone()).await.unwrap();
            }
        }
        for (run_id, _) in self.runs.values() {
            let record = self.ops.runs.runs.record(run_id).unwrap();
            if !record.state.ended() && record.instance_id.is_some() && record.reported_at.is_none() {
                self.ops.runs.runs.report(run_id, &[], None);
            }
        }
    }

    fn check(&self, minute: u32) {
        let now = self.ops.world.clock.now();
        let instances = self.ops.runs.instances.instances();
        for stack in &self.standing {
            let ended = self.ops.runs.instances.stack_instances_ended(stack);
            assert!(ended.is_empty(), "minute {minute}: instances of the standing {stack} were ended: {ended:?}");
            let live = instances.values().filter(|i| i.live() && i.tag(tags::CLOUDFORMATION_STACK) == Some(stack));
            assert_eq!(live.count(), 3, "minute {minute}: {stack} stands on its instances");
        }
        let mut per_run: BTreeMap<&str, usize> = BTreeMap::new();
        let mut per_cap: BTreeMap<&str, usize> = BTreeMap::new();
        for (id, instance) in instances.iter().filter(|(_, i)| i.live()) {
            let Some(run) = instance.tag(tags::RUN_ID) else { continue };
            *per_run.entry(run).or_default() += 1;
            *per_cap.entry(instance.tag(tags::KIND).unwrap()).or_default() += 1;
            let record = self.ops.runs.runs.record(&RunId::parse(run).unwrap()).unwrap();
            let held = record.held_at(now - SignedDuration::from_mins(10));
            assert!(!record.state.ended() || held, "minute {minute}: {id} outlived its run {run} ({:?})", record.state);
            let expires: Timestamp = instance.tag(tags::EXPIRES).unwrap().parse().unwrap();
            assert!(expires > now - SignedDuration::from_mins(10), "minute {minute}: {id} outlived its expiry");
        }
        assert!(per_run.values().all(|n| *n <= 1), "minute {minute}: a run with two live instances: {per_run:?}");
        // The ci profile's caps: 6 TEST and 3 BUILD runs (developers has none here).
        let within = per_cap.get("test").copied().unwrap_or(0) <= 6 && per_cap.get("build").copied().unwrap_or(0) <= 3;
        assert!(within, "minute {minute}: a cap was exceeded: {per_cap:?}");
        let states: Vec<String> = self
            .runs
            .iter()
            .map(|(name, (id, _))| format!("{name}={}", self.ops.runs.runs.record(id).unwrap().state.as_str()))
            .collect();
        println!("minute {minute:>3}: live run instances {per_cap:?}; runs {}", states.join(" "));
    }
}

#[tokio::test(start_paused = true)]
async fn a_day_in_the_life_on_fakes_that_behave_like_the_cloud_keeps_every_invariant() {
    let ops = OpsWorld::new(NOW);
    let provisioner = ops.world.provisioner.clone();
    provisioner.deploy(deploy("ci-standing"), &ops.world.invocation("d1")).await.unwrap();
    let later = ops.world.clock.now() + SignedDuration::from_mins(700);
    let keep = ScheduleDestroyRequest { cluster: cluster("ci-standing"), time_to_destroy: later, requested_by: None };
    provisioner.schedule_destroy(keep, &ops.world.invocation("d2")).await.unwrap();
    provisioner.deploy(deploy("ci-scheduled"), &ops.world.invocation("d3")).await.unwrap();
    let standing = vec!["sliderule-cluster-ci-standing".to_owned()];
    let mut day = Day { ops, runs: BTreeMap::new(), standing };
    day.start("passes", RunKind::Test, "ci-standing", 0, RunState::Succeeded).await;
    day.start("hangs", RunKind::Test, "ci-hang", 0, RunState::TimedOut).await;
    // The hung run checks in and starts its first step, then never reports again.
    day.ops.runs.runs.report(&day.run_id("hangs"), &[("checkout", StepStatus::Running)], None);
    let mut warned = false;

    for minute in (10..=480).step_by(10) {
        tokio::time::advance(Duration::from_secs(10 * 60)).await;
        match minute {
            10 => day.start("interrupted", RunKind::Build, "ci-standing", 0, RunState::Succeeded).await,
            20 => {
                day.ops.runs.instances.interrupt(&day.instance_of("interrupted"));
                day.start("held", RunKind::Test, "ci-held", 30, RunState::Failed).await;
                day.start("cancelled", RunKind::Test, "ci-cancel", 0, RunState::Cancelled).await;
            }
            30 => day.finish("passes", 0),
            40 => day.finish("held", 1),
            50 => {
                let cancel = crate::domain::CancelRequest { run_id: day.run_id("cancelled"), requested_by: None };
                assert_eq!(day.ops.runs.runner.cancel(cancel).await.unwrap().outcome, "cancelled");
            }
            60 => day.finish("interrupted", 0),
            100 => {
                // Seven starts at once against the cap of six, besides the hung run: five start.
                let names = ["f1", "f2", "f3", "f4", "f5", "f6", "f7"];
                let starts = names.map(|name| {
                    let runner = day.ops.runs.runner.clone();
                    let invocation = day.ops.world.invocation(name);
                    async move { runner.run(RunKind::Test, start(&format!("ci-{name}"), 0), &invocation).await }
                });
                let answers = futures::future::join_all(starts).await;
                let busy = answers.iter().filter(|a| a.as_ref().is_err_and(|e| e.code() == "Busy")).count();
                assert_eq!(busy, 2, "the hung run holds a slot: {answers:?}");
                for (name, answer) in names.iter().zip(answers) {
                    if let Ok(started) = answer {
                        let name: &'static str = name;
                        day.runs.insert(name, (started.run.run_id, RunState::Succeeded));
                    }
                }
            }
            130 => {
                let names: Vec<&'static str> = day.runs.keys().copied().filter(|n| n.starts_with('f')).collect();
                for name in names {
                    day.finish(name, 0);
                }
            }
            180 => {
                // The hung run's deadman: its exit trap says so, and the instance powers off.
                day.ops.runs.runs.report_timed_out(&day.run_id("hangs"));
                day.ops.runs.instances.shut_down(&day.instance_of("hangs"));
            }
            240 => {
                // The schedule fires: destroy with its own input.
                assert!(warned, "the scheduled cluster was warned first");
                let request = ClusterRequest { cluster: cluster("ci-scheduled"), requested_by: None };
                provisioner.destroy(request, &day.ops.world.invocation("fired")).await.unwrap();
            }
            _ => {}
        }
        day.deliver().await;
        let swept = day.ops.operations.sweep(&day.ops.world.invocation(&format!("s{minute}"))).await.unwrap();
        assert!(swept.actions.iter().all(|a| a.ok), "minute {minute}: {:?}", swept.actions);
        if swept.actions.iter().any(|a| a.finding.action == SweepAction::WarnDestroy) {
            assert!((210..240).contains(&minute), "warned at minute {minute}");
            warned = true;
        }
        day.check(minute);
    }

    for (name, (run_id, expected)) in &day.runs {
        let record = day.ops.runs.runs.record(run_id).unwrap();
        assert_eq!(record.state, *expected, "{name}: {:?}", record.attempts);
    }
    let interrupted = day.ops.runs.runs.record(&day.run_id("interrupted")).unwrap();
    assert_eq!(interrupted.attempts.len(), 2, "one retry after the interruption: {:?}", interrupted.attempts);
    let hung = day.ops.runs.runs.record(&day.run_id("hangs")).unwrap();
    assert_eq!(hung.attempts.len(), 1, "a time limit is never retried");
    let held = day.ops.runs.runs.record(&day.run_id("held")).unwrap();
    assert!(!day.ops.runs.instances.instances()[&held.instance_id.unwrap()].live(), "its hold ended");
    assert_eq!(day.ops.world.stacks.status("sliderule-cluster-ci-scheduled"), None, "the fired destroy");
    let alerts = day.ops.world.notices.sent();
    let about = |what: &str| alerts.iter().filter(|(subject, _)| subject.contains(what)).count();
    assert_eq!((about("RunTimedOut"), about("RunLost")), (1, 0), "{alerts:?}");
}
