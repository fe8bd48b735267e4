//! Alerts in memory.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::Faults;
use crate::error::Result;
use crate::ports::Notices;

/// Alerts in memory: (subject, message), oldest first.
#[derive(Default)]
pub struct FakeNotices {
    faults: Arc<Faults>,
    sent: Mutex<Vec<(String, String)>>,
}

impl FakeNotices {
    pub fn new(faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeNotices { faults, sent: Mutex::default() })
    }

    pub fn sent(&self) -> Vec<(String, String)> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait]
impl Notices for FakeNotices {
    async fn publish(&self, subject: &str, message: &str) -> Result<()> {
        let effect = self.faults.draw("Publish")?;
        self.sent.lock().unwrap().push((subject.to_owned(), message.to_owned()));
        effect.answer(())
    }
}
