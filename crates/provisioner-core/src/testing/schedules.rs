//! EventBridge Scheduler in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;

use super::faults::fake_failure;
use super::{Call, Faults};
use crate::domain::RequestedBy;
use crate::error::{AwsErrorKind, Result};
use crate::ports::{ScheduleEntry, Schedules};

/// EventBridge Scheduler in memory: name → (time, input).
#[derive(Default)]
pub struct FakeSchedules {
    faults: Arc<Faults>,
    schedules: Mutex<BTreeMap<String, (Timestamp, String)>>,
    /// Who scheduled each, when they said.
    scheduled_by: Mutex<BTreeMap<String, String>>,
    calls: Mutex<Vec<Call>>,
    /// When set, every create fails with this AWS error code.
    failing_creates: Mutex<Option<&'static str>>,
}

impl FakeSchedules {
    /// Every create fails with the AWS error `code` from now on.
    pub fn fail_creates(&self, code: &'static str) {
        *self.failing_creates.lock().unwrap() = Some(code);
    }

    pub fn new(faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeSchedules { faults, ..FakeSchedules::default() })
    }

    pub fn all(&self) -> BTreeMap<String, (Timestamp, String)> {
        self.schedules.lock().unwrap().clone()
    }

    pub fn insert(&self, name: &str, at: Timestamp) {
        self.schedules.lock().unwrap().insert(name.to_owned(), (at, "{}".to_owned()));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Schedules for FakeSchedules {
    async fn list(&self, prefix: &str) -> Result<Vec<ScheduleEntry>> {
        self.calls.lock().unwrap().push(Call::ListSchedules(prefix.to_owned()));
        let effect = self.faults.draw("ListSchedules").await?;
        let schedules = self.schedules.lock().unwrap();
        effect.answer(
            schedules
                .iter()
                .filter(|(name, _)| name.starts_with(prefix))
                .map(|(name, (at, _))| ScheduleEntry {
                    name: name.clone(),
                    at: *at,
                    requested_by: self.scheduled_by.lock().unwrap().get(name).cloned(),
                })
                .collect(),
        )
    }

    async fn create(&self, name: &str, at: Timestamp, input: &str, requested_by: Option<&RequestedBy>) -> Result<()> {
        self.calls.lock().unwrap().push(Call::CreateSchedule(name.to_owned()));
        let effect = self.faults.draw("CreateSchedule").await?;
        if let Some(code) = *self.failing_creates.lock().unwrap() {
            return Err(fake_failure("CreateSchedule", code, AwsErrorKind::Other));
        }
        let mut schedules = self.schedules.lock().unwrap();
        if schedules.contains_key(name) {
            return Err(fake_failure("CreateSchedule", "ConflictException", AwsErrorKind::Conflict));
        }
        schedules.insert(name.to_owned(), (at, input.to_owned()));
        if let Some(who) = requested_by {
            self.scheduled_by.lock().unwrap().insert(name.to_owned(), who.as_str().to_owned());
        }
        effect.answer(())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.calls.lock().unwrap().push(Call::DeleteSchedule(name.to_owned()));
        let effect = self.faults.draw("DeleteSchedule").await?;
        self.schedules.lock().unwrap().remove(name);
        effect.answer(())
    }
}
