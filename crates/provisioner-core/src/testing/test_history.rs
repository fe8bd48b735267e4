//! The TEST runs' summaries in memory, per profile and version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::Faults;
use crate::domain::test_results::{keep_summaries, TestSummary};
use crate::domain::GitRef;
use crate::error::Result;
use crate::ports::TestHistory;

#[derive(Default)]
pub struct FakeTestHistory {
    faults: Arc<Faults>,
    summaries: Mutex<HashMap<String, Vec<TestSummary>>>,
}

impl FakeTestHistory {
    pub fn new(faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeTestHistory { faults, ..FakeTestHistory::default() })
    }
}

#[async_trait]
impl TestHistory for FakeTestHistory {
    async fn summaries(&self, profile: &str, version: &GitRef) -> Result<Vec<TestSummary>> {
        let effect = self.faults.draw("TestSummaries").await?;
        let key = format!("{profile}#{version}");
        effect.answer(self.summaries.lock().unwrap().get(&key).cloned().unwrap_or_default())
    }

    async fn add(&self, profile: &str, version: &GitRef, summary: &TestSummary) -> Result<()> {
        let effect = self.faults.draw("AddTestSummary").await?;
        let key = format!("{profile}#{version}");
        let mut all = self.summaries.lock().unwrap();
        let kept = all.remove(&key).unwrap_or_default();
        all.insert(key, keep_summaries(kept, summary.clone()));
        effect.answer(())
    }
}
