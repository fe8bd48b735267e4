//! A TEST run's per-test results when it ends: its steps' suites compared with the previous
//! ended TEST run of the same profile and version ([`crate::domain::test_results`]), the result
//! kept in its record, its summary added to what the next run compares with, and the alert's
//! words (new failures first).

use super::*;
use crate::catalog::KnownFailuresAlert;
use crate::domain::test_results::{compare, RunTests, StillFailing, TestResults, TestSummary};
use crate::domain::{RunKind, RunRecord, RunState};

impl Runner {
    /// Sets the record's `tests` from its steps' suites, compared with what the history holds;
    /// no history read compares with nothing (every failure then reads as new; logged).
    pub(super) async fn compare_tests(&self, record: &mut RunRecord) {
        if record.kind != RunKind::Test || record.tests.is_some() {
            return;
        }
        let Ok(profile) = self.catalog.profile_for(&record.cluster) else { return };
        let suites: Vec<(&str, &_)> =
            record.steps.iter().filter_map(|step| Some((step.name.as_str(), step.tests.as_ref()?))).collect();
        if suites.is_empty() {
            return;
        }
        let earlier = match self.ports.test_history.summaries(&profile.name, &record.version).await {
            Ok(earlier) => earlier,
            Err(error) => {
                tracing::warn!(run_id = %record.run_id, %error, "could not read the test history; comparing with none");
                Vec::new()
            }
        };
        let ended_at = record.ended_at.unwrap_or_else(|| self.ports.clock.now());
        let run = RunTests { run_id: &record.run_id, commit: record.commit.as_deref(), ended_at, suites };
        record.tests = compare(&run, &earlier).map(|(results, _)| results);
    }

    /// Adds the ended run's summary to its profile and version's history, once, by whoever
    /// ended it; a failed add is logged (the next run then compares with an older one).
    pub(super) async fn keep_test_summary(&self, record: &RunRecord) {
        let (Some(tests), Ok(profile)) = (&record.tests, self.catalog.profile_for(&record.cluster)) else { return };
        let summary = TestSummary {
            run_id: record.run_id.clone(),
            commit: record.commit.clone(),
            ended_at: record.ended_at.unwrap_or_else(|| self.ports.clock.now()),
            ran: record.steps.iter().filter(|step| step.tests.is_some()).map(|step| step.name.clone()).collect(),
            failed: tests
                .failed
                .iter()
                .map(|f| StillFailing { id: f.id.clone(), step: f.step.clone(), since: f.since.clone() })
                .collect(),
        };
        if let Err(error) = self.ports.test_history.add(&profile.name, &record.version, &summary).await {
            tracing::warn!(run_id = %record.run_id, %error, "could not keep the run's test summary");
        }
    }

    /// Whether a failed TEST run's alert is one line, or none, because it has no new failure (the
    /// profile's `known_failures_alert`); `None`: the full alert.
    pub(super) fn known_failures_only(&self, record: &RunRecord) -> Option<KnownFailuresAlert> {
        let tests = record.tests.as_ref().filter(|tests| tests.compared_with.is_some() && tests.new.is_empty())?;
        if record.state != RunState::Failed || tests.failed.is_empty() {
            return None;
        }
        let profile = self.catalog.profile_for(&record.cluster).ok()?;
        Some(profile.runner.known_failures_alert)
    }
}

/// The failures of `tests` in words, new ones first: what the alert and `TestsFailed` lead with.
pub fn describe_failures(tests: &TestResults) -> String {
    const SHOWN: usize = 10;
    let list = |ids: Vec<&str>| {
        let more = ids.len().saturating_sub(SHOWN);
        let mut text = ids.into_iter().take(SHOWN).collect::<Vec<_>>().join(", ");
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        text
    };
    let mut parts = Vec::new();
    if !tests.new.is_empty() {
        parts.push(format!(
            "{} new failure(s): {}",
            tests.new.len(),
            list(tests.new.iter().map(String::as_str).collect())
        ));
    }
    if !tests.still_failing.is_empty() {
        let ids = tests.still_failing.iter().map(|f| f.id.as_str()).collect();
        let oldest = tests.still_failing.iter().map(|f| &f.since).min().map(ToString::to_string).unwrap_or_default();
        parts.push(format!("{} still failing (the oldest since {oldest}): {}", tests.still_failing.len(), list(ids)));
    }
    if !tests.fixed.is_empty() {
        parts.push(format!("{} fixed: {}", tests.fixed.len(), list(tests.fixed.iter().map(String::as_str).collect())));
    }
    if !tests.flaky.is_empty() {
        parts.push(format!("{} flaky: {}", tests.flaky.len(), list(tests.flaky.iter().map(String::as_str).collect())));
    }
    let counts = tests.counts;
    let mut text = format!("tests: {} passed, {} failed, {} skipped", counts.passed, counts.failed, counts.skipped);
    for part in parts {
        text.push_str("; ");
        text.push_str(&part);
    }
    text
}
