//! Per-test results of a TEST run and what changed since the last one: each test step's suite
//! report (counts and failing test ids, as the instance read them), the run's `tests` (the
//! contract's counts, failures and comparison), and the summaries the comparison reads.
//!
//! - A failure is `new` when the previous ended TEST run of the same profile and version did not
//!   fail it (it passed, or did not exist there), `still_failing` when it did, with `since` the
//!   first run of the unbroken streak in which it failed.
//! - `fixed`: tests that failed there and pass here (their step ran its suite here, and they are
//!   not among its failures: only failures are kept, so a test that passes is one not failing).
//! - `flaky`: tests that both failed and passed on the same commit within [`FLAKY_WINDOW`].
//!
//! Tests are told apart by step and id: two suites may name a test alike.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::RunId;

/// Failing test ids kept per step in a run's record; the full list is in the suite's report,
/// uploaded beside the step's log.
pub const MAX_FAILED_IDS: usize = 50;
/// The longest test id kept (longer ones are cut).
pub const MAX_TEST_ID: usize = 200;
/// How far back a test that failed and passed on one commit counts as flaky.
pub const FLAKY_WINDOW: SignedDuration = SignedDuration::from_hours(14 * 24);
/// Ended runs kept per profile and version for the comparison: the newest, within
/// [`FLAKY_WINDOW`] (at least the previous one, whatever its age).
pub const MAX_SUMMARIES: usize = 30;

/// How many tests passed, failed and were skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCounts {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
}

impl TestCounts {
    fn add(&mut self, other: TestCounts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

/// What one step's suite reported (the instance's parse of its report): counts and the ids of
/// its failing tests, at most [`MAX_FAILED_IDS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTests {
    #[serde(flatten)]
    pub counts: TestCounts,
    /// Failing test ids as the suite names them (a pytest node id, a jest file and name, a Lua
    /// selftest's name).
    #[serde(default)]
    pub failing: Vec<String>,
}

impl StepTests {
    /// The instance's report of a step's suite (compact JSON), checked and bounded: `None` for
    /// anything else.
    pub fn parse(json: &str) -> Option<StepTests> {
        let mut tests: StepTests = serde_json::from_str(json).ok()?;
        tests.failing.truncate(MAX_FAILED_IDS);
        for id in &mut tests.failing {
            if id.len() > MAX_TEST_ID {
                let cut = (0..=MAX_TEST_ID).rev().find(|at| id.is_char_boundary(*at)).unwrap_or(0);
                id.truncate(cut);
            }
        }
        Some(tests)
    }
}

/// A test, by the step whose suite ran it and its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TestKey {
    pub step: String,
    pub id: String,
}

/// Whether a failure is new since the run compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureChange {
    New,
    StillFailing,
}

/// One failing test of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedTest {
    pub id: String,
    pub step: String,
    pub status: FailureChange,
    /// The first run of the unbroken streak in which it failed (this run, for a new failure).
    pub since: RunId,
}

/// A failure that goes on: the test and the run its streak began in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StillFailing {
    pub id: String,
    pub step: String,
    pub since: RunId,
}

/// The contract's `tests` of a TEST run that ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestResults {
    pub counts: TestCounts,
    /// Each failing test (at most [`MAX_FAILED_IDS`] per step), new ones first.
    pub failed: Vec<FailedTest>,
    /// The previous ended TEST run of the same profile and version: what `new` and `fixed` are
    /// measured against; null for the first.
    pub compared_with: Option<RunId>,
    /// Ids of the failures that are new.
    pub new: Vec<String>,
    pub still_failing: Vec<StillFailing>,
    /// Ids of the tests that failed there and pass here.
    pub fixed: Vec<String>,
    /// Ids of the tests that failed and passed on this run's commit in the last 14 days.
    pub flaky: Vec<String>,
}

impl TestResults {
    /// One line for a summary: counts, then how many failures are new.
    pub fn describe(&self) -> String {
        let c = self.counts;
        let mut text = format!("{} passed, {} failed, {} skipped", c.passed, c.failed, c.skipped);
        if self.compared_with.is_some() {
            text.push_str(&format!(
                "; {} new, {} still failing, {} fixed",
                self.new.len(),
                self.still_failing.len(),
                self.fixed.len()
            ));
        }
        if !self.flaky.is_empty() {
            text.push_str(&format!(", {} flaky", self.flaky.len()));
        }
        text
    }
}

/// What the comparison keeps of an ended TEST run, per profile and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestSummary {
    pub run_id: RunId,
    pub commit: Option<String>,
    pub ended_at: Timestamp,
    /// The steps whose suite ran and reported.
    pub ran: Vec<String>,
    /// Its failures, each with the run its streak began in.
    pub failed: Vec<StillFailing>,
}

impl TestSummary {
    /// Whether it failed `key`.
    fn failed(&self, key: &TestKey) -> Option<&StillFailing> {
        self.failed.iter().find(|f| f.step == key.step && f.id == key.id)
    }

    /// Whether it ran `key`'s suite and the test did not fail: it passed (or no longer exists).
    fn passed(&self, key: &TestKey) -> bool {
        self.ran.contains(&key.step) && self.failed(key).is_none()
    }
}

/// The suites of a run's steps, by step name: what the comparison starts from.
pub struct RunTests<'a> {
    pub run_id: &'a RunId,
    pub commit: Option<&'a str>,
    pub ended_at: Timestamp,
    pub suites: Vec<(&'a str, &'a StepTests)>,
}

/// The run's `tests` and its summary, against `earlier` (ended runs of the same profile and
/// version, any order; this run's own summary, if there, is left out). `None` when no step of
/// the run reported a suite.
pub fn compare(run: &RunTests, earlier: &[TestSummary]) -> Option<(TestResults, TestSummary)> {
    if run.suites.is_empty() {
        return None;
    }
    let mut earlier: Vec<&TestSummary> = earlier.iter().filter(|s| s.run_id != *run.run_id).collect();
    earlier.sort_by_key(|s| std::cmp::Reverse(s.ended_at));
    let previous = earlier.first().copied();
    let mut counts = TestCounts::default();
    let mut failing = Vec::new();
    for (step, tests) in &run.suites {
        counts.add(tests.counts);
        failing.extend(tests.failing.iter().map(|id| TestKey { step: (*step).to_owned(), id: id.clone() }));
    }
    failing.sort();
    failing.dedup();
    let mut results = TestResults { counts, compared_with: previous.map(|p| p.run_id.clone()), ..Default::default() };
    let mut summary = TestSummary {
        run_id: run.run_id.clone(),
        commit: run.commit.map(str::to_owned),
        ended_at: run.ended_at,
        ran: run.suites.iter().map(|(step, _)| (*step).to_owned()).collect(),
        failed: Vec::new(),
    };
    for key in &failing {
        let streak = previous.and_then(|p| p.failed(key));
        let (status, since) = match streak {
            Some(before) => (FailureChange::StillFailing, before.since.clone()),
            None => (FailureChange::New, run.run_id.clone()),
        };
        let (id, step) = (key.id.clone(), key.step.clone());
        match status {
            FailureChange::New => results.new.push(id.clone()),
            FailureChange::StillFailing => {
                results.still_failing.push(StillFailing { id: id.clone(), step: step.clone(), since: since.clone() })
            }
        }
        summary.failed.push(StillFailing { id: id.clone(), step: step.clone(), since: since.clone() });
        results.failed.push(FailedTest { id, step, status, since });
    }
    results.failed.sort_by_key(|f| f.status == FailureChange::StillFailing);
    if let Some(previous) = previous {
        results.fixed = previous
            .failed
            .iter()
            .map(|f| TestKey { step: f.step.clone(), id: f.id.clone() })
            .filter(|key| summary.passed(key))
            .map(|key| key.id)
            .collect();
    }
    results.flaky = flaky(&summary, &earlier);
    Some((results, summary))
}

/// Tests that failed in one run and passed in another on `this` run's commit within
/// [`FLAKY_WINDOW`] of it, this run included.
fn flaky(this: &TestSummary, earlier: &[&TestSummary]) -> Vec<String> {
    let Some(commit) = this.commit.as_deref() else { return Vec::new() };
    let same_commit: Vec<&TestSummary> = std::iter::once(this)
        .chain(earlier.iter().copied())
        .filter(|s| s.commit.as_deref() == Some(commit) && this.ended_at - s.ended_at <= FLAKY_WINDOW)
        .collect();
    let failed: BTreeSet<TestKey> = same_commit
        .iter()
        .flat_map(|s| s.failed.iter().map(|f| TestKey { step: f.step.clone(), id: f.id.clone() }))
        .collect();
    failed.into_iter().filter(|key| same_commit.iter().any(|s| s.passed(key))).map(|key| key.id).collect()
}

/// The summaries to keep after adding `summary` to `kept`: one per run, the newest
/// [`MAX_SUMMARIES`] of those within [`FLAKY_WINDOW`] of the newest, and the newest always.
pub fn keep_summaries(kept: Vec<TestSummary>, summary: TestSummary) -> Vec<TestSummary> {
    let mut by_run: BTreeMap<RunId, TestSummary> = kept.into_iter().map(|s| (s.run_id.clone(), s)).collect();
    by_run.insert(summary.run_id.clone(), summary);
    let mut all: Vec<TestSummary> = by_run.into_values().collect();
    all.sort_by_key(|s| std::cmp::Reverse(s.ended_at));
    let newest = all.first().map(|s| s.ended_at);
    let mut kept: Vec<TestSummary> = Vec::new();
    for summary in all {
        let recent = newest.is_some_and(|newest| newest - summary.ended_at <= FLAKY_WINDOW);
        if kept.is_empty() || (recent && kept.len() < MAX_SUMMARIES) {
            kept.push(summary);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run that started `minute` minutes in: one id per minute, the same each time asked.
    fn run_id(minute: i64) -> RunId {
        let start = at(minute).strftime("%Y%m%dt%H%M%S").to_string().to_lowercase();
        RunId::parse(&format!("test-ci-1-{start}-a{:03x}", minute % 4096)).unwrap()
    }

    fn at(minute: i64) -> Timestamp {
        "2026-12-01T00:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_mins(minute)
    }

    fn suite(failing: &[&str], passed: u32) -> StepTests {
        StepTests {
            counts: TestCounts { passed, failed: failing.len() as u32, skipped: 1 },
            failing: failing.iter().map(|id| (*id).to_owned()).collect(),
        }
    }

    /// Runs one after another on `commit`, each failing the given tests of one pytest step, and
    /// what each compared: (results, summary) per run.
    fn sequence(runs: &[(&str, &[&str])]) -> Vec<TestResults> {
        let mut kept: Vec<TestSummary> = Vec::new();
        let mut answers = Vec::new();
        for (index, (commit, failing)) in runs.iter().enumerate() {
            let id = run_id(index as i64 * 60);
            let tests = suite(failing, 10);
            let run = RunTests {
                run_id: &id,
                commit: Some(commit),
                ended_at: at(index as i64 * 60 + 30),
                suites: vec![("pytests", &tests)],
            };
            let (results, summary) = compare(&run, &kept).unwrap();
            kept = keep_summaries(kept, summary);
            answers.push(results);
        }
        answers
    }

    #[test]
    fn a_failure_is_new_then_still_failing_since_its_first_run_then_fixed() {
        let answers = sequence(&[("c1", &["t::x"]), ("c2", &["t::x"]), ("c3", &["t::x", "t::y"]), ("c4", &[])]);
        assert_eq!(answers[0].compared_with, None);
        assert_eq!(answers[0].new, vec!["t::x"]);
        assert_eq!(answers[0].failed[0].status, FailureChange::New);
        assert_eq!(answers[0].failed[0].since, run_id(0));
        assert_eq!(answers[1].compared_with, Some(run_id(0)));
        assert!(answers[1].new.is_empty());
        assert_eq!(
            answers[1].still_failing,
            vec![StillFailing { id: "t::x".into(), step: "pytests".into(), since: run_id(0) }]
        );
        // The streak's start stays its first run, however long it goes on.
        assert_eq!(answers[2].still_failing[0].since, run_id(0));
        assert_eq!(answers[2].new, vec!["t::y"]);
        assert_eq!(answers[2].failed[0].id, "t::y", "new failures first");
        assert_eq!(answers[3].fixed, vec!["t::x", "t::y"]);
        assert!(answers[3].failed.is_empty() && answers[3].new.is_empty());
        assert_eq!(answers[3].counts, TestCounts { passed: 10, failed: 0, skipped: 1 });
    }

    #[test]
    fn a_streak_broken_by_a_pass_starts_again() {
        let answers = sequence(&[("c1", &["t::x"]), ("c2", &[]), ("c3", &["t::x"])]);
        assert_eq!(answers[2].new, vec!["t::x"]);
        assert_eq!(answers[2].failed[0].since, run_id(120));
    }

    #[test]
    fn a_test_that_failed_and_passed_on_one_commit_is_flaky() {
        let answers = sequence(&[("c1", &["t::x"]), ("c1", &[]), ("c2", &["t::y"])]);
        assert!(answers[0].flaky.is_empty());
        assert_eq!(answers[1].flaky, vec!["t::x"]);
        // Another commit's runs do not count.
        assert!(answers[2].flaky.is_empty());
    }

    #[test]
    fn a_test_whose_suite_did_not_run_is_not_fixed() {
        let first = run_id(0);
        let failing = suite(&["t::x"], 3);
        let (_, summary) = compare(
            &RunTests { run_id: &first, commit: None, ended_at: at(1), suites: vec![("pytests", &failing)] },
            &[],
        )
        .unwrap();
        let second = run_id(60);
        let other = suite(&[], 3);
        let (results, _) = compare(
            &RunTests { run_id: &second, commit: None, ended_at: at(61), suites: vec![("jests", &other)] },
            &[summary],
        )
        .unwrap();
        assert!(results.fixed.is_empty());
        // The same id in two suites is two tests.
        let third = run_id(120);
        let jest_x = suite(&["t::x"], 3);
        let (results, _) = compare(
            &RunTests { run_id: &third, commit: None, ended_at: at(121), suites: vec![("jests", &jest_x)] },
            &[],
        )
        .unwrap();
        assert_eq!(results.new, vec!["t::x"]);
    }

    #[test]
    fn a_run_without_suites_has_no_results() {
        let id = run_id(0);
        assert!(compare(&RunTests { run_id: &id, commit: None, ended_at: at(1), suites: Vec::new() }, &[]).is_none());
    }

    #[test]
    fn summaries_are_kept_within_the_window_and_the_newest_always() {
        let summary = |minute: i64| TestSummary {
            run_id: run_id(minute),
            commit: None,
            ended_at: at(minute),
            ran: Vec::new(),
            failed: Vec::new(),
        };
        let mut kept = Vec::new();
        for day in 0..40 {
            kept = keep_summaries(kept, summary(day * 24 * 60));
        }
        assert_eq!(kept.len(), 15, "the last 14 days and the day before's edge");
        assert_eq!(kept[0].run_id, run_id(39 * 24 * 60));
        let again = keep_summaries(kept.clone(), summary(39 * 24 * 60));
        assert_eq!(again.len(), kept.len(), "one per run");
        let mut many = Vec::new();
        for minute in 0..100 {
            many = keep_summaries(many, summary(minute));
        }
        assert_eq!(many.len(), MAX_SUMMARIES);
        let old = keep_summaries(Vec::new(), summary(0));
        assert_eq!(keep_summaries(old, summary(60 * 24 * 60)).len(), 1);
    }

    #[test]
    fn a_suite_report_is_bounded() {
        let long = "x".repeat(500);
        let ids: Vec<String> = (0..80).map(|i| format!("t{i}")).chain([long]).collect();
        let json = serde_json::json!({"passed": 1, "failed": 81, "skipped": 0, "failing": ids}).to_string();
        let tests = StepTests::parse(&json).unwrap();
        assert_eq!(tests.failing.len(), MAX_FAILED_IDS);
        assert_eq!(tests.counts.failed, 81);
        let cut = StepTests::parse(
            &serde_json::json!({"passed": 0, "failed": 1, "skipped": 0, "failing": ["é".repeat(150)]}).to_string(),
        )
        .unwrap();
        assert!(cut.failing[0].len() <= MAX_TEST_ID);
        assert!(StepTests::parse("not json").is_none());
    }
}
