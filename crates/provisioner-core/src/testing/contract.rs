//! What every implementation of a port promises, as one suite per port. The unit tests run each
//! suite against the fake, `tests/tests/e2e/adapters.rs` against the AWS adapter on the emulator, so
//! a fake cannot drift from what the adapter does. Each suite uses only the names it is given.

use jiff::{SignedDuration, Timestamp};

use crate::domain::books::{Books, SpendEntry};
use crate::domain::history::{month_of, start_of_month};
use crate::domain::launch_log::{LaunchEvent, LaunchOutcome};
use crate::domain::tags;
use crate::domain::test_results::TestSummary;
use crate::domain::{Attempt, AttemptOutcome, ClusterName, GitRef, ImageTag, Market, StackPhase};
use crate::domain::{HistoryEntry, OnceNotice, RequestedBy, RunId, RunKind, RunRecord, RunState, StepResult};
use crate::error::AwsErrorKind;
use crate::ports::{
    EndedRuns, History, Images, Instances, LaunchLog, LaunchSpec, Lease, Locks, Runs, ScheduleEntry, Schedules, Slots,
    Spend, StackSpec, Stacks, TestHistory,
};

/// Describe, create, create again (a conflict), delete, delete again, for the stack `spec` names
/// (which must not exist). Creation must settle at once, as on the emulator.
pub async fn stacks(stacks: &dyn Stacks, spec: &StackSpec) {
    assert_eq!(stacks.describe(&spec.name).await.unwrap(), None, "a stack never created is absent");
    assert!(stacks.failure_reasons(&spec.name).await.unwrap().is_empty(), "an absent stack has no failures");
    stacks.delete(&spec.name).await.expect("deleting an absent stack succeeds");

    let id = stacks.create(spec).await.unwrap();
    let described = stacks.describe(&spec.name).await.unwrap().expect("a created stack is described");
    assert_eq!(described.id, id);
    // The parameters the provisioner reads back (the emulator shows list parameters otherwise).
    for (key, value) in spec.parameters.iter().filter(|(key, _)| ["ClusterName", "Version"].contains(&key.as_str())) {
        assert_eq!(described.parameters.get(key), Some(value), "parameter {key}");
    }
    let again = stacks.create(spec).await.expect_err("a stack of that name exists");
    assert_eq!(again.aws_kind(), Some(AwsErrorKind::Conflict), "{again}");
    let listed = stacks.list(&spec.name).await.unwrap();
    assert_eq!(
        listed.iter().map(|s| (s.name.as_str(), s.id.as_str())).collect::<Vec<_>>(),
        [(spec.name.as_str(), id.as_str())]
    );
    assert!(listed[0].created_at.is_some(), "a listed stack says when it was created");
    assert!(stacks.list(&format!("{}-none", spec.name)).await.unwrap().is_empty(), "the prefix selects");

    stacks.delete(&spec.name).await.unwrap();
    stacks.delete(&spec.name).await.expect("deleting again succeeds");
    let after = stacks.describe(&spec.name).await.unwrap();
    assert!(after.as_ref().is_none_or(|s| s.status.phase() == StackPhase::Deleting), "{after:?}");
    let listed = stacks.list(&spec.name).await.unwrap();
    assert!(listed.iter().all(|s| s.status.phase() == StackPhase::Deleting), "{listed:?}");
}

/// Create, list by prefix, create again (a conflict), delete, delete again, for schedules under
/// `prefix` (which must have none).
pub async fn schedules(schedules: &dyn Schedules, prefix: &str, at: Timestamp) {
    assert!(schedules.list(prefix).await.unwrap().is_empty());
    let (first, second) = (format!("{prefix}a"), format!("{prefix}b"));
    let someone = RequestedBy::parse("dev@example.org").unwrap();
    schedules.create(&first, at, r#"{"cluster":"ci-1"}"#, Some(&someone)).await.unwrap();
    schedules.create(&second, at + SignedDuration::from_hours(1), r#"{"cluster":"ci-1"}"#, None).await.unwrap();
    let mut listed = schedules.list(prefix).await.unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    let expected = [
        ScheduleEntry { name: first.clone(), at, requested_by: Some("dev@example.org".into()) },
        ScheduleEntry { name: second.clone(), at: at + SignedDuration::from_hours(1), requested_by: None },
    ];
    assert_eq!(listed, expected);
    assert_eq!(schedules.list(&second).await.unwrap().len(), 1, "the prefix selects");
    let again = schedules.create(&first, at, "{}", None).await.expect_err("a schedule of that name exists");
    assert_eq!(again.aws_kind(), Some(AwsErrorKind::Conflict), "{again}");
    schedules.delete(&first).await.unwrap();
    schedules.delete(&first).await.expect("deleting an absent schedule succeeds");
    assert_eq!(schedules.list(prefix).await.unwrap().len(), 1);
    schedules.delete(&second).await.unwrap();
}

/// A deploy's lease of `owner`, taken at `now` for `seconds`.
pub fn lease(owner: &str, now: Timestamp, seconds: i64) -> Lease {
    Lease {
        owner: owner.into(),
        operation: "deploy".into(),
        acquired_at: now,
        expires_at: now + SignedDuration::from_secs(seconds),
    }
}

/// One holder at a time until release or expiry, renewal by the holder only, and the free lock
/// going to the contender that waited longest, for the locks of `key` and `other` (never taken).
pub async fn locks(locks: &dyn Locks, key: &ClusterName, other: &ClusterName) {
    let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
    assert_eq!(locks.try_acquire(key, &lease("a", now, 60), now, now).await.unwrap(), None);
    let holder = locks.try_acquire(key, &lease("b", now, 60), now, now).await.unwrap().expect("held by a");
    assert_eq!(holder, lease("a", now, 60));
    assert_eq!(locks.try_acquire(other, &lease("b", now, 60), now, now).await.unwrap(), None, "others are free");
    locks.release(other, "b").await.unwrap();
    assert_eq!(locks.try_acquire(key, &lease("a", now, 120), now, now).await.unwrap(), None, "the holder again");

    assert_eq!(locks.renew(key, &lease("a", now, 180)).await.unwrap(), None, "the holder renews");
    let taken = locks.renew(key, &lease("b", now, 180)).await.unwrap().expect("b holds nothing");
    assert_eq!((taken.owner.as_str(), taken.expires_at), ("a", now + SignedDuration::from_secs(180)));

    locks.release(key, "b").await.unwrap();
    assert!(
        locks.try_acquire(key, &lease("b", now, 60), now, now).await.unwrap().is_some(),
        "only the holder releases"
    );
    locks.release(key, "a").await.unwrap();
    assert_eq!(locks.try_acquire(key, &lease("b", now, 60), now, now).await.unwrap(), None, "b waited longest");
    assert_eq!(locks.renew(key, &lease("a", now, 60)).await.unwrap().map(|h| h.owner), Some("b".into()));

    let later = now + SignedDuration::from_secs(61);
    let taken_over = locks.try_acquire(key, &lease("c", later, 60), later, later).await.unwrap();
    assert_eq!(taken_over, None, "an expired lease is taken over");
    locks.release(key, "c").await.unwrap();
    let free = locks.renew(key, &lease("c", later, 60)).await.unwrap().expect("released");
    assert_eq!(free.owner, "", "nobody holds a released lock");

    // Turns: the contender that waited longest gets a free lock; one that stops asking loses its place.
    let turns = ClusterName::parse(&format!("{other}-turns")).unwrap();
    let turns = &turns;
    let t = |seconds: i64| later + SignedDuration::from_secs(seconds);
    let ask = |owner: &'static str, asked: i64, since: i64| {
        let lease = lease(owner, t(asked), 30);
        async move { locks.try_acquire(turns, &lease, t(since), t(asked)).await.unwrap() }
    };
    assert_eq!(ask("a", 0, 0).await, None);
    assert_eq!(ask("b", 1, 1).await.unwrap().owner, "a");
    assert_eq!(ask("c", 2, 2).await.unwrap().owner, "a");
    locks.release(turns, "a").await.unwrap();
    let ahead = ask("c", 3, 2).await.expect("free, but b waits longer than c");
    assert_eq!((ahead.owner.as_str(), ahead.acquired_at), ("b", t(1)));
    assert_eq!(ask("b", 4, 1).await, None);
    assert_eq!(ask("c", 4, 2).await.unwrap().owner, "b");
    locks.release(turns, "b").await.unwrap();
    assert_eq!(ask("d", 5, 5).await.unwrap().owner, "c", "c asked while b held it, so it is next");
    assert_eq!(ask("c", 6, 2).await, None);
    locks.release(turns, "c").await.unwrap();
    assert_eq!(ask("e", 16, 16).await, None, "d stopped asking at 5 s: at 16 s its place has lapsed");
    assert_eq!(ask("f", 17, 17).await.unwrap().owner, "e");
    locks.release(turns, "f").await.unwrap();
    locks.release(turns, "e").await.unwrap();
    assert_eq!(ask("g", 18, 18).await, None, "a contender that gives up leaves the line at once");
}

/// A run record of `cluster` at `version`, started at `now`, with two pending steps.
pub fn run_record(kind: RunKind, cluster: &str, version: &str, now: Timestamp) -> RunRecord {
    let cluster = ClusterName::parse(cluster).unwrap();
    let run_id = RunId::new(kind, &cluster, now);
    RunRecord {
        log_location: String::new(),
        run_id,
        kind,
        cluster,
        version: GitRef::parse(version).unwrap(),
        commit: None,
        layout: None,
        instance_id: None,
        state: RunState::Launching,
        steps: vec![StepResult::pending("checkout"), StepResult::pending("lint")],
        started_at: now,
        ended_at: None,
        deadline: now + SignedDuration::from_hours(3),
        expires_at: now + SignedDuration::from_hours(30 * 24),
        images: Vec::new(),
        outcome: None,
        failure: None,
        attempts: vec![attempt(1, now)],
        hold_minutes: 30,
        held_until: None,
        instance_state: None,
        reported_at: None,
        requested_by: Some(RequestedBy::parse("dev@example.org").unwrap()),
        runner_image: Some("ami-0123456789abcdef0".into()),
        // Written by the instance alone.
        holds: None,
        tests: None,
    }
}

/// Attempt `number` of a run, begun at `at`.
pub fn attempt(number: u32, at: Timestamp) -> Attempt {
    Attempt {
        number,
        instance_id: None,
        market: if number == 3 { Market::OnDemand } else { Market::Spot },
        instance_type: None,
        started_at: at,
        ended_at: None,
        outcome: AttemptOutcome::Running,
        check_in_by: at + SignedDuration::from_mins(10),
        deadline: at + SignedDuration::from_hours(3),
        step: None,
        log_location: format!("s3://logs/runs/AROATEST:i-{number}/"),
    }
}

/// One active run per kind, cluster and version; records read back as written; updates only
/// while the run has not ended. `cluster` must have no runs.
pub async fn runs(runs: &dyn Runs, cluster: &str) {
    let now = crate::domain::time::whole_seconds(Timestamp::now());
    let first = run_record(RunKind::Test, cluster, "main", now);
    let second = run_record(RunKind::Test, cluster, "main", now);
    let build = run_record(RunKind::Build, cluster, "main", now);
    assert_eq!(runs.get(&first.run_id).await.unwrap(), None);

    assert_eq!(runs.active(&first, now).await.unwrap(), None, "nothing is active yet");
    assert_eq!(runs.start(&first, now).await.unwrap(), None, "nothing is active");
    assert_eq!(runs.active(&second, now).await.unwrap().as_ref(), Some(&first.run_id), "read, for a dry run");
    let later = first.deadline + SignedDuration::from_secs(1);
    assert_eq!(runs.active(&second, later).await.unwrap(), None, "past its deadline, it is not active");
    // Asked again (an earlier answer was lost): it is the active run, and its record stays.
    assert_eq!(runs.start(&first, now).await.unwrap(), Some(first.run_id.clone()), "a start asked again");
    assert_eq!(runs.get(&first.run_id).await.unwrap().as_ref(), Some(&first), "a start asked again keeps it");
    assert_eq!(runs.start(&second, now).await.unwrap(), Some(first.run_id.clone()), "the same run is active");
    assert_eq!(runs.get(&second.run_id).await.unwrap(), None, "a refused start writes nothing");
    assert_eq!(runs.start(&build, now).await.unwrap(), None, "another kind is another run");
    assert_eq!(runs.get(&first.run_id).await.unwrap().as_ref(), Some(&first), "read back as written");
    let live = live_ids(runs).await;
    assert!(live.contains(&first.run_id) && live.contains(&build.run_id), "started runs are live: {live:?}");
    assert!(!live.contains(&second.run_id), "a refused start is not");

    let running =
        RunRecord { state: RunState::Running, instance_id: Some("i-0123456789abcdef0".into()), ..first.clone() };
    runs.update(&running).await.unwrap();
    assert_eq!(runs.get(&first.run_id).await.unwrap().as_ref(), Some(&running));

    // The next attempt begins once, from a clean start; a writer of the old attempt is refused.
    let mut next = RunRecord { state: RunState::Launching, instance_id: None, ..running.clone() };
    next.attempts[0].outcome = AttemptOutcome::Interrupted;
    next.attempts[0].ended_at = Some(now);
    next.attempts.push(attempt(2, now));
    runs.begin_attempt(&next).await.unwrap();
    assert_eq!(runs.get(&first.run_id).await.unwrap().as_ref(), Some(&next), "begun, the instance's fields cleared");
    let twice = runs.begin_attempt(&next).await.expect_err("only one caller begins an attempt");
    assert_eq!(twice.aws_kind(), Some(AwsErrorKind::Conflict), "{twice}");
    let stale = runs.update(&running).await.expect_err("a writer of the attempt before is refused");
    assert_eq!(stale.aws_kind(), Some(AwsErrorKind::Conflict), "{stale}");
    let running = RunRecord { state: RunState::Running, instance_id: Some("i-0123456789abcdef1".into()), ..next };
    runs.update(&running).await.unwrap();
    let mut third = running.clone();
    third.attempts.push(attempt(3, now));
    runs.begin_attempt(&third).await.unwrap();
    let running = RunRecord { attempts: third.attempts, ..running };
    runs.update(&running).await.unwrap();

    let held_until = now + SignedDuration::from_mins(35);
    let ended = RunRecord {
        state: RunState::Failed,
        ended_at: Some(now + SignedDuration::from_mins(5)),
        failure: Some("it failed".into()),
        held_until: Some(held_until),
        ..running.clone()
    };
    runs.update(&ended).await.unwrap();
    assert!(live_ids(runs).await.contains(&first.run_id), "a run holding its instance is live");
    let late = runs.update(&running).await.expect_err("an ended run is not written");
    assert_eq!(late.aws_kind(), Some(AwsErrorKind::Conflict), "{late}");
    assert_eq!(runs.get(&first.run_id).await.unwrap().as_ref(), Some(&ended), "its ending stands");
    let early = now + SignedDuration::from_mins(6);
    runs.end_hold(&first.run_id, early).await.unwrap();
    let ended = RunRecord { held_until: Some(early), ..ended };
    assert_eq!(runs.get(&first.run_id).await.unwrap().as_ref(), Some(&ended), "its hold ended early");
    assert!(!live_ids(runs).await.contains(&first.run_id), "its hold ended, it is not live");
    runs.end_hold(&build.run_id, early).await.expect("a run that holds nothing");
    assert_eq!(runs.get(&build.run_id).await.unwrap().unwrap().held_until, None, "and it still holds nothing");
    runs.forget(std::slice::from_ref(&build)).await.unwrap();
    assert!(live_ids(runs).await.contains(&build.run_id), "a run that has not ended is not forgotten");
    let built =
        RunRecord { state: RunState::Succeeded, ended_at: Some(now + SignedDuration::from_mins(9)), ..build.clone() };
    runs.update(&built).await.unwrap();
    assert!(!live_ids(runs).await.contains(&build.run_id), "ended without a hold, it is not live");
    let of_cluster = EndedRuns { cluster: Some(ClusterName::parse(cluster).unwrap()), kind: None };
    let at = now + SignedDuration::from_mins(10);
    let ended_ids: Vec<RunId> = runs.ended(10, &of_cluster, at).await.unwrap().into_iter().map(|r| r.run_id).collect();
    assert_eq!(ended_ids, [build.run_id.clone(), first.run_id.clone()], "the latest end first");
    let tests = EndedRuns { kind: Some(RunKind::Test), ..of_cluster.clone() };
    let ended_tests = runs.ended(10, &tests, at).await.unwrap();
    assert_eq!(ended_tests.iter().map(|r| &r.run_id).collect::<Vec<_>>(), [&first.run_id], "of a kind");
    assert_eq!(runs.ended(1, &of_cluster, at).await.unwrap().len(), 1, "at most as many as asked");
    let last_build = runs.last_ended(RunKind::Build).await.unwrap().map(|run| run.run_id);
    assert_eq!(last_build.as_ref(), Some(&build.run_id), "the last build that ended");
    let before = now + SignedDuration::from_mins(7);
    let ended_before = runs.ended(10, &of_cluster, before).await.unwrap();
    assert_eq!(ended_before.iter().map(|r| &r.run_id).collect::<Vec<_>>(), [&first.run_id], "ended by then");
    let never_started = runs.update(&second).await.expect_err("a run that does not exist is not written");
    assert_eq!(never_started.aws_kind(), Some(AwsErrorKind::Conflict), "{never_started}");

    runs.release(&second).await.expect("releasing a run that is not active changes nothing");
    assert_eq!(runs.start(&second, now).await.unwrap(), Some(first.run_id.clone()));
    runs.release(&ended).await.unwrap();
    assert_eq!(runs.start(&second, now).await.unwrap(), None, "released, the next run starts");
    let past_deadline = run_record(RunKind::Test, cluster, "main", now);
    let after = second.deadline + SignedDuration::from_secs(1);
    assert_eq!(runs.start(&past_deadline, after).await.unwrap(), None, "past its deadline, a run is not active");

    let listed = runs.list().await.unwrap();
    for kept in [&ended, &build, &second, &past_deadline] {
        let found = listed.iter().find(|run| run.run_id == kept.run_id);
        assert_eq!(found, runs.get(&kept.run_id).await.unwrap().as_ref(), "listed as read");
        assert!(found.is_some(), "{} is listed", kept.run_id);
    }
    slots(runs, cluster, now).await;
}

/// The live runs with no record that [`unrecorded_live_runs`] expects planted, as a start that
/// failed between its two writes leaves them: one noted before `cutoff`, one after it.
pub fn unrecorded_plants(cutoff: Timestamp) -> [(RunId, Timestamp); 2] {
    [
        (RunId::parse("test-ci-contract-20261123t120000-ab12").unwrap(), cutoff - SignedDuration::from_mins(20)),
        (RunId::parse("test-ci-contract-20261123t130000-cd34").unwrap(), cutoff + SignedDuration::from_mins(1)),
    ]
}

/// Live runs whose record was never written ([`unrecorded_plants`], planted by the caller): only
/// what is older than the cutoff is taken out, and a run with a record, however old, never is.
pub async fn unrecorded_live_runs(runs: &dyn Runs, cluster: &str, cutoff: Timestamp) {
    let [(old, _), (recent, _)] = unrecorded_plants(cutoff);
    let recorded = run_record(RunKind::Test, cluster, "main", cutoff - SignedDuration::from_hours(3));
    assert_eq!(runs.start(&recorded, recorded.started_at).await.unwrap(), None);
    assert_eq!(runs.forget_unrecorded(cutoff).await.unwrap(), [old], "only the old one without a record");
    assert_eq!(live_ids(runs).await, std::slice::from_ref(&recorded.run_id), "the recorded run stays live");
    let later = cutoff + SignedDuration::from_hours(24);
    assert_eq!(runs.forget_unrecorded(later).await.unwrap(), [recent], "the recent one, once old");
    assert_eq!(runs.forget_unrecorded(later).await.unwrap(), [], "each is taken out once");
    assert_eq!(live_ids(runs).await, std::slice::from_ref(&recorded.run_id));
}

/// The ids of the runs [`Runs::live`] finds.
async fn live_ids(runs: &dyn Runs) -> Vec<RunId> {
    runs.live().await.unwrap().into_iter().map(|run| run.run_id).collect()
}

/// A profile's slots: taken up to the cap, then refused naming the holders; the same run again
/// holds its own; a freed slot and a slot past its holder's deadline are free again.
async fn slots(runs: &dyn Runs, cluster: &str, now: Timestamp) {
    let pool = Slots { profile: format!("slots-{cluster}"), kind: RunKind::Build, cap: 2 };
    let ids: Vec<RunId> = (0..4).map(|_| run_record(RunKind::Build, cluster, "main", now).run_id).collect();
    let deadline = now + SignedDuration::from_hours(3);
    assert_eq!(runs.take_slot(&pool, &ids[0], deadline, now).await.unwrap(), None, "free slots");
    assert_eq!(runs.take_slot(&pool, &ids[0], deadline, now).await.unwrap(), None, "its own slot, again");
    assert_eq!(runs.take_slot(&pool, &ids[1], deadline, now).await.unwrap(), None, "the last slot");
    let mut holders = vec![ids[0].clone(), ids[1].clone()];
    holders.sort_by_key(ToString::to_string);
    assert_eq!(runs.take_slot(&pool, &ids[2], deadline, now).await.unwrap(), Some(holders.clone()), "full");
    assert_eq!(runs.slots_held(&pool, now).await.unwrap(), holders, "read, for a dry run");
    let other_kind = Slots { kind: RunKind::Test, ..pool.clone() };
    assert_eq!(runs.take_slot(&other_kind, &ids[2], deadline, now).await.unwrap(), None, "each kind its own");

    runs.free_slot(&pool.profile, pool.kind, &ids[0]).await.unwrap();
    runs.free_slot(&pool.profile, pool.kind, &ids[0]).await.expect("freeing a free slot changes nothing");
    runs.free_slot("no-such-profile", pool.kind, &ids[0]).await.expect("a profile without slots");
    assert_eq!(runs.take_slot(&pool, &ids[2], deadline, now).await.unwrap(), None, "a freed slot");
    let after = deadline + SignedDuration::from_secs(1);
    assert_eq!(
        runs.take_slot(&pool, &ids[3], after + SignedDuration::from_hours(1), after).await.unwrap(),
        None,
        "past deadlines"
    );
}

/// A small provisioner-tagged spot instance of `run_id`, from `image_id`.
pub fn launch_spec(image_id: String, run_id: &RunId) -> LaunchSpec {
    LaunchSpec {
        image_id,
        instance_type: "c7g.2xlarge".into(),
        market: Market::Spot,
        subnet_id: None,
        security_group_ids: Vec::new(),
        instance_profile: None,
        user_data: crate::domain::UserData::compress("#!/bin/bash\n").expect("a small script"),
        volume_gb: 8,
        tags: vec![
            (tags::RUN_ID.into(), run_id.to_string()),
            (tags::KIND.into(), run_id.kind().to_string()),
            (tags::PROVISIONER.into(), "true".into()),
        ],
        client_token: run_id.launch_token(1, 0),
    }
}

/// Launch (again with the same token: the same instance), find by run id, terminate, for a run
/// id no instance has.
pub async fn instances(instances: &dyn Instances, run_id: &RunId) {
    let spec = launch_spec(instances.latest_image("arm64").await.unwrap(), run_id);
    assert!(spec.image_id.starts_with("ami-"), "{}", spec.image_id);
    assert!(instances.of_run(run_id).await.unwrap().is_empty());

    let id = instances.launch(&spec).await.unwrap();
    assert_eq!(instances.launch(&spec).await.unwrap(), id, "the same token launches no second instance");
    let of_run: Vec<String> = instances.of_run(run_id).await.unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(of_run, std::slice::from_ref(&id));
    assert!(instances.state(&id).await.unwrap().is_some_and(|s| s.is_working()), "a new instance works");
    assert_eq!(instances.run_of(&id).await.unwrap().as_ref(), Some(run_id), "an instance names its run");
    assert_eq!(instances.run_of("i-0000000000000dead").await.unwrap(), None, "an unknown instance has no run");
    // A cluster's instance carries the provisioner's tag too (its stack's), but is no run's.
    let cluster_tags = vec![(tags::KIND.into(), tags::CLUSTER_KIND.into()), (tags::PROVISIONER.into(), "true".into())];
    let cluster_spec = LaunchSpec {
        tags: cluster_tags,
        client_token: format!("{}-cluster", run_id.launch_token(1, 0)),
        ..spec.clone()
    };
    let cluster_instance = instances.launch(&cluster_spec).await.unwrap();
    let of_runs = instances.of_runs().await.unwrap();
    let listed = of_runs.iter().find(|i| i.id == id).expect("a run's instance is listed");
    assert!(of_runs.iter().all(|i| i.id != cluster_instance), "a cluster's instance is not a run's: {of_runs:?}");
    assert_eq!(listed.run_kind(), Some(run_id.kind()));
    instances.terminate(&cluster_instance).await.unwrap();
    assert_eq!((listed.instance_type.as_str(), listed.tag(tags::RUN_ID)), ("c7g.2xlarge", Some(run_id.as_str())));
    assert!(listed.launched_at.is_some() && listed.state.is_working(), "{listed:?}");

    instances.terminate(&id).await.unwrap();
    assert!(!instances.state(&id).await.unwrap().is_some_and(|s| s.is_live()), "terminated");
    assert!(instances.of_run(run_id).await.unwrap().is_empty(), "a terminated instance is not the run's");
    assert!(instances.of_runs().await.unwrap().iter().all(|i| i.id != id), "a terminated instance is not listed");
    instances.terminate(&id).await.expect("terminating again succeeds");
    assert_eq!(instances.run_of(&id).await.unwrap().as_ref(), Some(run_id), "a terminated instance still names it");

    // On demand, with its own token: another instance, of the same run.
    let on_demand = LaunchSpec { market: Market::OnDemand, client_token: run_id.launch_token(2, 0), ..spec };
    let second = instances.launch(&on_demand).await.unwrap();
    assert_ne!(second, id);
    assert_eq!(instances.run_of(&second).await.unwrap().as_ref(), Some(run_id));

    // A runner image of it: listed by its tags with its snapshots, retired (twice: no error).
    let image_run =
        RunId::parse(&format!("image-{}", &run_id.as_str()[run_id.as_str().find('-').unwrap() + 1..])).unwrap();
    let made: Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
    let mut image_tags = crate::domain::runner_image::image_tags(
        "arm64",
        "0123456789abcdef",
        "registry/buildenv:latest",
        &image_run,
        made,
    );
    let holds = crate::domain::runner_image::ImageHolds::checked(
        Some(format!("sha256:{}", "0f".repeat(32))),
        Some("git=2.47.1 make=4.3 docker=25.0.5 node=20.18.0 conda=24.9.2".into()),
    );
    image_tags.extend(holds.tags());
    let name = crate::domain::runner_image::image_name("arm64", &image_run);
    let image_id = instances.create_image(&second, &name, &image_tags).await.unwrap();
    assert!(image_id.starts_with("ami-"), "{image_id}");
    let images = instances.runner_images().await.unwrap();
    let image = images.iter().find(|image| image.id == image_id).expect("the new image is listed").clone();
    assert_eq!((image.architecture.as_str(), image.plan_hash.as_str()), ("arm64", "0123456789abcdef"));
    assert_eq!(image.run_id.as_ref(), Some(&image_run));
    assert_eq!(image.holds, holds, "what it holds, read back from its tags");
    assert!(image.created_at.is_some(), "EC2 says when it was made: {image:?}");
    assert!(!image.snapshots.is_empty() && matches!(image.state.as_str(), "pending" | "available"), "{image:?}");
    instances.retire_image(&image).await.unwrap();
    assert!(instances.runner_images().await.unwrap().iter().all(|listed| listed.id != image_id), "retired");
    instances.retire_image(&image).await.expect("retiring again succeeds");
    instances.terminate(&second).await.unwrap();
    assert_eq!(instances.state("i-0000000000000dead").await.unwrap(), None, "an unknown instance has no state");
}

/// A cluster's history: entries read back newest first, across months, only those kept 400
/// days; another cluster's are not its. `cluster` must have no history.
pub async fn history(history: &dyn History, cluster: &ClusterName, other: &ClusterName) {
    let now: Timestamp = "2026-12-02T12:00:00Z".parse().unwrap();
    assert!(history.of(cluster, now, 50).await.unwrap().is_empty());
    let entry = |days_ago: i64, operation: &str| HistoryEntry {
        operation: operation.into(),
        at: now - SignedDuration::from_hours(24 * days_ago),
        requested_by: Some("dev@example.org".into()),
        outcome: "success".into(),
        version: Some("v5.5.0".into()),
        detail: Some("created".into()),
        stack_created_at: None,
    };
    let written = [entry(401, "deploy"), entry(40, "deploy"), entry(3, "schedule_destroy"), entry(0, "destroy")];
    for written in &written {
        history.record(cluster, written).await.unwrap();
    }
    history.record(other, &entry(1, "deploy")).await.unwrap();
    let read = history.of(cluster, now, 50).await.unwrap();
    assert_eq!(read, [written[3].clone(), written[2].clone(), written[1].clone()], "newest first, 400 days kept");

    // A month's entries of every cluster, and only that month's.
    let mut month = history.month(&month_of(now)).await.unwrap();
    month.sort_by_key(|(_, entry)| entry.at);
    let ours: Vec<_> = month.iter().filter(|(c, _)| c == cluster).map(|(_, e)| e.clone()).collect();
    assert_eq!(ours, [written[3].clone()], "this month's (December's), of this cluster");
    assert!(month.iter().any(|(c, e)| c == other && e.operation == "deploy"), "another cluster's too");

    // A notice is claimed once: each schedule's warning, each month's budget alert of each level.
    let warning = |at: &str| OnceNotice::DestroyWarning {
        schedule: format!("destroy.{cluster}.{at}"),
        at: now + SignedDuration::from_hours(1),
    };
    assert!(history.claim(&warning("20261202T130000"), "sweep-1", now).await.unwrap(), "the first claim");
    assert!(history.claim(&warning("20261202T130000"), "sweep-1", now).await.unwrap(), "its own claim, asked again");
    assert!(!history.claim(&warning("20261202T130000"), "sweep-2", now).await.unwrap(), "claimed already");
    assert!(history.claim(&warning("20261202T140000"), "sweep-2", now).await.unwrap(), "another schedule");
    // A claim never confirmed (its sender failed) is taken again after the lease; a confirmed one never.
    let later = now + crate::domain::history::CLAIM_LEASE + SignedDuration::from_secs(1);
    assert!(history.claim(&warning("20261202T130000"), "sweep-3", later).await.unwrap(), "an unsent claim");
    history.confirm(&warning("20261202T130000")).await.unwrap();
    let much_later = later + SignedDuration::from_hours(1);
    assert!(!history.claim(&warning("20261202T130000"), "sweep-4", much_later).await.unwrap(), "sent");
    let alert = |percent| OnceNotice::BudgetAlert {
        profile: format!("p-{cluster}"),
        month_start: start_of_month(now),
        percent,
    };
    assert!(history.claim(&alert(80), "sweep-1", now).await.unwrap());
    history.confirm(&alert(80)).await.unwrap();
    assert!(!history.claim(&alert(80), "sweep-2", much_later).await.unwrap(), "once a month");
    assert!(history.claim(&alert(100), "sweep-2", now).await.unwrap(), "another level");
}

/// A profile and version's test history: summaries read back newest first, one per run however
/// often added, another profile's or version's apart, concurrent adds all kept, old ones dropped.
/// `profile` must have no history.
pub async fn test_history(history: &dyn TestHistory, profile: &str) {
    let version = GitRef::parse("main").unwrap();
    let now: Timestamp = "2026-12-02T12:00:00Z".parse().unwrap();
    assert!(history.summaries(profile, &version).await.unwrap().is_empty());
    let summary = |minutes_ago: i64, id: &str| TestSummary {
        run_id: RunId::parse(&format!("test-ci-1-20261202t1200{:02}-{id}", minutes_ago % 60)).unwrap(),
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        ended_at: now - SignedDuration::from_mins(minutes_ago),
        ran: vec!["python-client-pytests".into()],
        failed: Vec::new(),
    };
    let (older, newer) = (summary(30, "aaaa"), summary(10, "bbbb"));
    history.add(profile, &version, &older).await.unwrap();
    history.add(profile, &version, &newer).await.unwrap();
    history.add(profile, &version, &newer).await.unwrap();
    assert_eq!(history.summaries(profile, &version).await.unwrap(), [newer.clone(), older.clone()]);
    assert!(history.summaries(profile, &GitRef::parse("v5.5.0").unwrap()).await.unwrap().is_empty());
    assert!(history.summaries(&format!("{profile}-other"), &version).await.unwrap().is_empty());
    // Adds at once all land: each is conditioned on what it read.
    let together: Vec<TestSummary> = ["c001", "c002", "c003", "c004"].iter().map(|id| summary(5, id)).collect();
    let adds = together.iter().map(|s| history.add(profile, &version, s));
    for added in futures::future::join_all(adds).await {
        added.unwrap();
    }
    assert_eq!(history.summaries(profile, &version).await.unwrap().len(), 6);
    // Fifteen days on, only the newest and what is within 14 days of it are kept.
    let late = TestSummary { ended_at: now + SignedDuration::from_hours(15 * 24), ..summary(0, "dddd") };
    history.add(profile, &version, &late).await.unwrap();
    assert_eq!(history.summaries(profile, &version).await.unwrap(), [late]);
}

/// The launch log: events read back oldest first, the same event kept once whoever saw it when,
/// concurrent records all kept, only the last 7 days read. Every test shares one log: the suite
/// counts the events of its own `run_id` alone.
pub async fn launch_log(log: &dyn LaunchLog, run_id: &RunId) {
    let now = Timestamp::now();
    let event = |minutes_ago: i64, instance_type: &str, outcome: LaunchOutcome| LaunchEvent {
        at: now - SignedDuration::from_mins(minutes_ago),
        run_id: run_id.clone(),
        attempt: 1,
        profile: "ci".into(),
        instance_type: instance_type.into(),
        market: Market::Spot,
        subnet: Some("subnet-1".into()),
        outcome,
    };
    let refused = |minutes_ago, instance_type| {
        event(minutes_ago, instance_type, LaunchOutcome::Refused { code: "InsufficientInstanceCapacity".into() })
    };
    let ours = |events: Vec<LaunchEvent>| events.into_iter().filter(|e| &e.run_id == run_id).collect::<Vec<_>>();
    log.record(&refused(8 * 24 * 60, "old.large")).await.unwrap();
    log.record(&refused(20, "a.large")).await.unwrap();
    log.record(&refused(19, "a.large")).await.unwrap();
    let together = ["b.large", "c.large", "d.large"].map(|t| event(10, t, LaunchOutcome::Interrupted));
    for recorded in futures::future::join_all(together.iter().map(|e| log.record(e))).await {
        recorded.unwrap();
    }
    let read = ours(log.recent(now).await.unwrap());
    let types: Vec<&str> = read.iter().map(|e| e.instance_type.as_str()).collect();
    assert_eq!(types.len(), 4, "a week kept, the same refusal once: {read:?}");
    assert_eq!(read[0], refused(20, "a.large"), "oldest first, as first seen");
    assert!(["b.large", "c.large", "d.large"].iter().all(|t| types.contains(t)), "{types:?}");
}

/// A profile's books: empty before the first write; a change read back; no change when the
/// change makes nothing; concurrent changes all kept (each asked again over the others').
pub async fn spend(spend: &dyn Spend, profile: &str) {
    let now = Timestamp::now();
    assert_eq!(spend.books(profile).await.unwrap(), Books::default());
    let entry =
        |id: &str| SpendEntry { id: id.into(), ..SpendEntry::cluster("c", 1.5, now - SignedDuration::from_hours(2)) };
    assert!(spend.change(profile, &|books: Books| books.begin(entry("a"), now)).await.unwrap());
    let books = spend.books(profile).await.unwrap();
    assert_eq!(books.entries, [entry("a")]);
    assert!(
        !spend.change(profile, &|books: Books| books.settle("none", now, false)).await.unwrap(),
        "nothing to settle"
    );
    let together = ["b", "c", "d"]
        .map(|id| async move { spend.change(profile, &move |books: Books| books.begin(entry(id), now)).await });
    for changed in futures::future::join_all(together).await {
        assert!(changed.unwrap());
    }
    assert!(spend.change(profile, &|books: Books| books.settle("a", now, false)).await.unwrap());
    let books = spend.books(profile).await.unwrap();
    let mut ids: Vec<&str> = books.entries.iter().map(|e| e.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["b", "c", "d"]);
    assert_eq!(books.clusters_usd, 3.0, "a's two hours at 1.5");
    assert!(spend.books("another-profile-of-the-contract").await.unwrap().entries.is_empty(), "each profile its own");
}

/// Which of the repositories lack the tag: `held` has it, `absent` does not exist.
pub async fn images(images: &dyn Images, registry: &str, held: &str, absent: &str, tag: &ImageTag) {
    let asked = [held.to_owned(), absent.to_owned()];
    assert_eq!(images.missing(registry, &asked, tag).await.unwrap(), [absent.to_owned()]);
    assert!(images.missing(registry, &asked[..1], tag).await.unwrap().is_empty());
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::{
        FakeHistory, FakeImages, FakeInstances, FakeLocks, FakeRuns, FakeSchedules, FakeStacks, FakeTestHistory,
    };
    use crate::testing::{FakeLaunchLog, FakeSpend, Faults};
    use crate::testing::{StackBehaviour, TestClock};

    /// The cluster stack spec the suites create.
    fn stack_spec(name: &str) -> StackSpec {
        StackSpec {
            name: name.into(),
            template_body: "{}".into(),
            parameters: vec![("ClusterName".into(), "ci-contract".into()), ("Version".into(), "v5.5.0".into())],
            tags: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_fake_stacks_keep_the_contract() {
        let clock = TestClock::starting_at("2026-11-23T12:00:00Z".parse().unwrap());
        let stacks = FakeStacks::new(clock, Faults::none());
        let settles_at_once =
            StackBehaviour { create_takes: Duration::ZERO, delete_takes: Duration::ZERO, ..Default::default() };
        stacks.set_behaviour(settles_at_once);
        super::stacks(&*stacks, &stack_spec("sliderule-cluster-ci-contract")).await;
    }

    #[tokio::test]
    async fn the_fake_schedules_keep_the_contract() {
        super::schedules(&*FakeSchedules::new(Faults::none()), "destroy.ci-contract.", Timestamp::now()).await;
    }

    #[tokio::test]
    async fn the_fake_locks_keep_the_contract() {
        let (key, other) = (ClusterName::parse("ci-1").unwrap(), ClusterName::parse("ci-2").unwrap());
        super::locks(&*FakeLocks::new(Faults::none()), &key, &other).await;
    }

    #[tokio::test]
    async fn the_fake_history_keeps_the_contract() {
        let (cluster, other) = (ClusterName::parse("ci-1").unwrap(), ClusterName::parse("ci-2").unwrap());
        super::history(&*FakeHistory::new(Faults::none()), &cluster, &other).await;
    }

    #[tokio::test]
    async fn the_fake_launch_log_keeps_the_contract() {
        let run_id = RunId::parse("test-ci-contract-20261123t120000-ab12").unwrap();
        super::launch_log(&*FakeLaunchLog::new(Faults::none()), &run_id).await;
    }

    #[tokio::test]
    async fn the_fake_books_keep_the_contract() {
        super::spend(&*FakeSpend::new(Faults::none()), "ci").await;
    }

    #[tokio::test]
    async fn the_fake_test_history_keeps_the_contract() {
        super::test_history(&*FakeTestHistory::new(Faults::none()), "ci").await;
    }

    #[tokio::test]
    async fn the_fake_runs_keep_the_contract() {
        super::runs(&*FakeRuns::new(Faults::none()), "ci-contract").await;
    }

    #[tokio::test]
    async fn the_fake_runs_take_out_live_runs_never_recorded() {
        let runs = FakeRuns::new(Faults::none());
        let cutoff = crate::domain::time::whole_seconds(Timestamp::now());
        for (id, noted) in super::unrecorded_plants(cutoff) {
            runs.plant_unrecorded(&id, noted);
        }
        super::unrecorded_live_runs(&*runs, "ci-contract", cutoff).await;
    }

    #[tokio::test]
    async fn the_fake_instances_keep_the_contract() {
        let clock = TestClock::starting_at("2026-11-23T12:00:00Z".parse().unwrap());
        let run_id = RunId::parse("test-ci-contract-20261123t120000-ab12").unwrap();
        super::instances(&*FakeInstances::new(clock, Faults::none()), &run_id).await;
    }

    #[tokio::test]
    async fn the_fake_registry_keeps_the_contract() {
        let images = FakeImages::new(Faults::none());
        let tag = ImageTag::to_deploy(&GitRef::parse("v5.5.0").unwrap()).unwrap();
        images.push(&["held".to_owned()], tag.as_str());
        super::images(&*images, "123456789012.dkr.ecr.us-east-1.amazonaws.com", "held", "absent", &tag).await;
    }
}
