//! The launch log in memory.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;

use super::Faults;
use crate::domain::launch_log::{keep_events, LaunchEvent, KEPT_FOR};
use crate::error::Result;
use crate::ports::LaunchLog;

#[derive(Default)]
pub struct FakeLaunchLog {
    faults: Arc<Faults>,
    events: Mutex<Vec<LaunchEvent>>,
}

impl FakeLaunchLog {
    pub fn new(faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeLaunchLog { faults, ..FakeLaunchLog::default() })
    }

    /// Every event kept, oldest first.
    pub fn events(&self) -> Vec<LaunchEvent> {
        self.events.lock().unwrap().clone()
    }
}

#[async_trait]
impl LaunchLog for FakeLaunchLog {
    async fn record(&self, event: &LaunchEvent) -> Result<()> {
        let effect = self.faults.draw("RecordLaunch").await?;
        let mut events = self.events.lock().unwrap();
        let kept = std::mem::take(&mut *events);
        *events = keep_events(kept, event.clone(), event.at);
        effect.answer(())
    }

    async fn recent(&self, now: Timestamp) -> Result<Vec<LaunchEvent>> {
        let effect = self.faults.draw("RecentLaunches").await?;
        let events = self.events.lock().unwrap().iter().filter(|e| now - e.at <= KEPT_FOR).cloned().collect();
        effect.answer(events)
    }
}
