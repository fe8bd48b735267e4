//! Run Command in memory: a cluster's instances, and how their log copies go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::faults::fake_failure;
use super::Faults;
use crate::error::{AwsErrorKind, Result};
use crate::ports::{ClusterLogs, CommandOutcome};

/// How the instances answer a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Copying {
    /// Each copy succeeds at once.
    #[default]
    Succeeds,
    /// Each copy runs and never ends (the instance is wedged).
    Hangs,
    /// Each copy fails on the instance.
    Fails,
    /// Run Command refuses to send it (no agent, no permission).
    Refused,
}

#[derive(Default)]
pub struct FakeClusterLogs {
    faults: Arc<Faults>,
    instances: Mutex<HashMap<String, Vec<String>>>,
    copying: Mutex<Copying>,
    sent: Mutex<Vec<(String, String)>>,
}

impl FakeClusterLogs {
    pub fn new(faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeClusterLogs { faults, ..FakeClusterLogs::default() })
    }

    /// `stack_name`'s running instances.
    pub fn set_instances(&self, stack_name: &str, instances: &[&str]) {
        let instances = instances.iter().map(|i| (*i).to_owned()).collect();
        self.instances.lock().unwrap().insert(stack_name.to_owned(), instances);
    }

    pub fn set_copying(&self, copying: Copying) {
        *self.copying.lock().unwrap() = copying;
    }

    /// Every copy asked: (instance, destination).
    pub fn sent(&self) -> Vec<(String, String)> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait]
impl ClusterLogs for FakeClusterLogs {
    async fn instances(&self, stack_name: &str) -> Result<Vec<String>> {
        let effect = self.faults.draw("DescribeStackResources").await?;
        effect.answer(self.instances.lock().unwrap().get(stack_name).cloned().unwrap_or_default())
    }

    async fn copy_logs(&self, instance_id: &str, destination: &str) -> Result<String> {
        let effect = self.faults.draw("SendCommand").await?;
        if *self.copying.lock().unwrap() == Copying::Refused {
            return Err(fake_failure("SendCommand", "InvalidInstanceId", AwsErrorKind::Other));
        }
        self.sent.lock().unwrap().push((instance_id.to_owned(), destination.to_owned()));
        effect.answer(format!("command-{instance_id}"))
    }

    async fn outcome(&self, _: &str, _: &str) -> Result<CommandOutcome> {
        let effect = self.faults.draw("GetCommandInvocation").await?;
        effect.answer(match *self.copying.lock().unwrap() {
            Copying::Succeeds => CommandOutcome::Succeeded,
            Copying::Hangs => CommandOutcome::Running,
            Copying::Fails | Copying::Refused => CommandOutcome::Failed("exit status 1".into()),
        })
    }
}
