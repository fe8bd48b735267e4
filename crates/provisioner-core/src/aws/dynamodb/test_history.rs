//! [`TestHistory`] over the table: an item per profile and version, its summaries one JSON list.

use async_trait::async_trait;

use super::*;
use crate::domain::test_results::{keep_summaries, TestSummary};
use crate::domain::GitRef;
use crate::error::{AwsErrorKind, AwsFailure, Error, Result};
use crate::ports::TestHistory;
use crate::table::test_history;

/// Reads and conditional writes of an item before an add gives up (another add won each).
const ADD_ATTEMPTS: u32 = 8;
/// How long an item outlives its newest summary: a version tested again within it compares.
const KEPT_DAYS: i64 = 400;

impl DynamoStore {
    /// The item's summaries and version (0 when there is no item).
    async fn read_summaries(&self, key: &str) -> Result<(Vec<TestSummary>, i64)> {
        let Some(item) = self.read(s(key)).await? else { return Ok((Vec::new(), 0)) };
        let version = item.get(test_history::VERSION).and_then(|v| v.as_n().ok()?.parse().ok()).unwrap_or(0);
        let summaries = text_of(&item, test_history::SUMMARIES)
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default();
        Ok((summaries, version))
    }
}

#[async_trait]
impl TestHistory for DynamoStore {
    async fn summaries(&self, profile: &str, version: &GitRef) -> Result<Vec<TestSummary>> {
        Ok(self.read_summaries(&test_history::key(profile, version)).await?.0)
    }

    async fn add(&self, profile: &str, version: &GitRef, summary: &TestSummary) -> Result<()> {
        let key = test_history::key(profile, version);
        for _ in 0..ADD_ATTEMPTS {
            let (kept, read) = self.read_summaries(&key).await?;
            if kept.iter().any(|kept| kept == summary) {
                return Ok(());
            }
            let kept = keep_summaries(kept, summary.clone());
            let newest = kept.first().map_or(summary.ended_at, |s| s.ended_at);
            let json = serde_json::to_string(&kept).map_err(|error| Error::invalid(error.to_string()))?;
            let condition = if read == 0 { "attribute_not_exists(#pk)" } else { "#version = :read" };
            let mut request = self
                .update_item(s(&key))
                .update_expression("SET #summaries = :summaries, #version = :next, #ttl = :ttl")
                .condition_expression(condition)
                .expression_attribute_names("#summaries", test_history::SUMMARIES)
                .expression_attribute_names("#version", test_history::VERSION)
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":summaries", s(&json))
                .expression_attribute_values(":next", n(read + 1))
                .expression_attribute_values(":ttl", n(newest.as_second() + KEPT_DAYS * 24 * 3600));
            request = if read == 0 {
                request.expression_attribute_names("#pk", KEY)
            } else {
                request.expression_attribute_values(":read", n(read))
            };
            if written(request.send().await, "UpdateItem")? {
                return Ok(());
            }
        }
        Err(Error::Aws(AwsFailure {
            service: SERVICE,
            operation: "UpdateItem",
            code: "ConditionalCheckFailedException".into(),
            message: format!("other runs added to the test history of {key} first {ADD_ATTEMPTS} times"),
            kind: AwsErrorKind::Throttled,
        }))
    }
}
