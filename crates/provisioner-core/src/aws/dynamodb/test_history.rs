//! [`TestHistory`] over the table: an item per profile and version, its summaries one JSON list.

use async_trait::async_trait;

use super::*;
use crate::domain::test_results::{keep_summaries, TestSummary};
use crate::domain::GitRef;
use crate::error::Result;
use crate::ports::TestHistory;
use crate::table::test_history;

/// How long an item outlives its newest summary: a version tested again within it compares.
const KEPT_SECONDS: i64 = 400 * 24 * 3600;

#[async_trait]
impl TestHistory for DynamoStore {
    async fn summaries(&self, profile: &str, version: &GitRef) -> Result<Vec<TestSummary>> {
        Ok(self.read_list(&test_history::key(profile, version), test_history::SUMMARIES).await?.0)
    }

    async fn add(&self, profile: &str, version: &GitRef, summary: &TestSummary) -> Result<()> {
        let add = |kept: Vec<TestSummary>| (!kept.contains(summary)).then(|| keep_summaries(kept, summary.clone()));
        let expires = |kept: &[TestSummary]| {
            kept.first().map_or(summary.ended_at, |newest| newest.ended_at).as_second() + KEPT_SECONDS
        };
        self.change_list(&test_history::key(profile, version), test_history::SUMMARIES, add, expires).await
    }
}
