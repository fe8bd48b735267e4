//! Cluster histories in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;

use super::Faults;
use crate::domain::{ClusterName, HistoryEntry};
use crate::error::Result;
use crate::ports::History;

#[derive(Default)]
pub struct FakeHistory {
    faults: Arc<Faults>,
    entries: Mutex<HashMap<String, Vec<HistoryEntry>>>,
    warned: Mutex<std::collections::HashSet<String>>,
}

impl FakeHistory {
    pub fn new(faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeHistory { faults, ..FakeHistory::default() })
    }

    /// Every entry of `cluster`, oldest first, kept or not.
    pub fn all(&self, cluster: &str) -> Vec<HistoryEntry> {
        self.entries.lock().unwrap().get(cluster).cloned().unwrap_or_default()
    }
}

#[async_trait]
impl History for FakeHistory {
    async fn record(&self, cluster: &ClusterName, entry: &HistoryEntry) -> Result<()> {
        let effect = self.faults.draw("RecordHistory")?;
        self.entries.lock().unwrap().entry(cluster.to_string()).or_default().push(entry.clone());
        effect.answer(())
    }

    async fn claim_warning(&self, schedule: &str, _: Timestamp) -> Result<bool> {
        let effect = self.faults.draw("ClaimWarning")?;
        let first = self.warned.lock().unwrap().insert(schedule.to_owned());
        effect.answer(first)
    }

    async fn of(&self, cluster: &ClusterName, now: Timestamp, _: usize) -> Result<Vec<HistoryEntry>> {
        let effect = self.faults.draw("GetHistory")?;
        // Newest first; of two at the same instant, the later written.
        let mut kept: Vec<HistoryEntry> =
            self.all(cluster.as_str()).into_iter().rev().filter(|e| e.kept_at(now)).collect();
        kept.sort_by_key(|e| std::cmp::Reverse(e.at));
        effect.answer(kept)
    }
}
