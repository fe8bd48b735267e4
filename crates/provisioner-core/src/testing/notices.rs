//! Alerts in memory.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::Faults;
use crate::error::Result;
use crate::ports::Notices;

/// Alerts in memory: (subject, message), oldest first; those meant also for someone, with whom.
#[derive(Default)]
pub struct FakeNotices {
    faults: Arc<Faults>,
    sent: Mutex<Vec<(String, String)>>,
    for_whom: Mutex<Vec<(String, String)>>,
}

impl FakeNotices {
    pub fn new(faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeNotices { faults, ..FakeNotices::default() })
    }

    pub fn sent(&self) -> Vec<(String, String)> {
        self.sent.lock().unwrap().clone()
    }

    /// The subjects of alerts meant also for someone, with whom.
    pub fn sent_for(&self) -> Vec<(String, String)> {
        self.for_whom.lock().unwrap().clone()
    }
}

#[async_trait]
impl Notices for FakeNotices {
    async fn publish(&self, subject: &str, message: &str) -> Result<()> {
        let effect = self.faults.draw("Publish").await?;
        self.sent.lock().unwrap().push((subject.to_owned(), message.to_owned()));
        effect.answer(())
    }

    async fn publish_for(&self, subject: &str, message: &str, requested_by: &str) -> Result<()> {
        let effect = self.faults.draw("Publish").await?;
        self.sent.lock().unwrap().push((subject.to_owned(), message.to_owned()));
        self.for_whom.lock().unwrap().push((subject.to_owned(), requested_by.to_owned()));
        effect.answer(())
    }
}
