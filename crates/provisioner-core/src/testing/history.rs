//! Cluster histories in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;

use super::Faults;
use crate::domain::history::month_of;
use crate::domain::{ClusterName, HistoryEntry, OnceNotice};
use crate::error::Result;
use crate::ports::History;

#[derive(Default)]
pub struct FakeHistory {
    faults: Arc<Faults>,
    entries: Mutex<HashMap<String, Vec<HistoryEntry>>>,
    /// Each claimed notice: who claimed it, when, and whether it was confirmed sent.
    claimed: Mutex<HashMap<String, (String, Timestamp, bool)>>,
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
        let effect = self.faults.draw("RecordHistory").await?;
        self.entries.lock().unwrap().entry(cluster.to_string()).or_default().push(entry.clone());
        effect.answer(())
    }

    async fn claim(&self, notice: &OnceNotice, claimant: &str, now: Timestamp) -> Result<bool> {
        let effect = self.faults.draw("ClaimNotice").await?;
        let mut claimed = self.claimed.lock().unwrap();
        let key = format!("{notice:?}");
        let free = claimed
            .get(&key)
            .is_none_or(|(by, at, sent)| by == claimant || (!sent && *at + crate::domain::history::CLAIM_LEASE < now));
        if free {
            claimed.insert(key, (claimant.to_owned(), now, false));
        }
        effect.answer(free)
    }

    async fn confirm(&self, notice: &OnceNotice) -> Result<()> {
        let effect = self.faults.draw("ConfirmNotice").await?;
        if let Some(claim) = self.claimed.lock().unwrap().get_mut(&format!("{notice:?}")) {
            claim.2 = true;
        }
        effect.answer(())
    }

    async fn month(&self, month: &str) -> Result<Vec<(ClusterName, HistoryEntry)>> {
        let effect = self.faults.draw("ScanHistory").await?;
        let entries = self.entries.lock().unwrap();
        let of_month = entries
            .iter()
            .filter_map(|(cluster, entries)| Some((ClusterName::parse(cluster).ok()?, entries)))
            .flat_map(|(cluster, entries)| {
                entries.iter().filter(|e| month_of(e.at) == month).map(move |e| (cluster.clone(), e.clone()))
            })
            .collect();
        effect.answer(of_month)
    }

    async fn of(&self, cluster: &ClusterName, now: Timestamp, _: usize) -> Result<Vec<HistoryEntry>> {
        let effect = self.faults.draw("GetHistory").await?;
        // Newest first; of two at the same instant, the later written.
        let mut kept: Vec<HistoryEntry> =
            self.all(cluster.as_str()).into_iter().rev().filter(|e| e.kept_at(now)).collect();
        kept.sort_by_key(|e| std::cmp::Reverse(e.at));
        effect.answer(kept)
    }
}
