//! CloudFormation in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};

use super::faults::fake_failure;
use super::{Call, FakeInstances, Faults, SEEDED_VERSION};
use crate::domain::tags;
use crate::domain::{StackPhase, StackStatus};
use crate::error::{AwsErrorKind, Result};
use crate::ports::{Clock, StackSnapshot, StackSpec, Stacks};

/// How the fake CloudFormation behaves when asked to create or delete.
#[derive(Debug, Clone)]
pub struct StackBehaviour {
    pub create_takes: Duration,
    pub create_ends_in: &'static str,
    pub delete_takes: Duration,
    pub delete_ends_in: &'static str,
    pub failure_reasons: Vec<String>,
}

impl Default for StackBehaviour {
    fn default() -> Self {
        StackBehaviour {
            create_takes: Duration::from_secs(90),
            create_ends_in: "CREATE_COMPLETE",
            delete_takes: Duration::from_secs(60),
            delete_ends_in: "DELETE_COMPLETE",
            failure_reasons: Vec::new(),
        }
    }
}

struct FakeStack {
    id: String,
    created_at: Timestamp,
    parameters: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    /// Statuses from the time each takes effect, in order.
    timeline: Vec<(Timestamp, String)>,
}

impl FakeStack {
    fn status_at(&self, now: Timestamp) -> &str {
        self.timeline.iter().rev().find(|(from, _)| *from <= now).map_or("CREATE_IN_PROGRESS", |(_, s)| s.as_str())
    }

    fn snapshot(&self, name: &str, now: Timestamp) -> Option<StackSnapshot> {
        let status = self.status_at(now);
        (status != "DELETE_COMPLETE").then(|| StackSnapshot {
            name: name.to_owned(),
            id: self.id.clone(),
            status: StackStatus::new(status),
            status_reason: None,
            parameters: self.parameters.clone(),
            tags: self.tags.clone(),
            outputs: BTreeMap::from([("ClusterName".to_owned(), name.to_owned())]),
            created_at: Some(self.created_at),
        })
    }
}

/// CloudFormation in memory. A stack moves through its timeline as the clock passes.
pub struct FakeStacks {
    clock: Arc<dyn Clock>,
    faults: Arc<Faults>,
    stacks: Mutex<HashMap<String, FakeStack>>,
    behaviour: Mutex<StackBehaviour>,
    calls: Mutex<Vec<Call>>,
    created: Mutex<Vec<StackSpec>>,
    next_id: Mutex<u32>,
    /// Where CloudFormation launches the stacks' instances, once told ([`Self::launch_instances_in`]).
    instances: Mutex<Option<Arc<FakeInstances>>>,
}

impl FakeStacks {
    pub fn new(clock: Arc<dyn Clock>, faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeStacks {
            clock,
            faults,
            stacks: Mutex::default(),
            behaviour: Mutex::default(),
            calls: Mutex::default(),
            created: Mutex::default(),
            next_id: Mutex::new(0),
            instances: Mutex::default(),
        })
    }

    /// From now on every stack created or seeded launches its instances in `instances`, carrying
    /// its tags as CloudFormation copies them, and its delete ends them.
    pub fn launch_instances_in(&self, instances: Arc<FakeInstances>) {
        *self.instances.lock().unwrap() = Some(instances);
    }

    fn launch_stack_instances(&self, name: &str, tags: &BTreeMap<String, String>) {
        if let Some(instances) = self.instances.lock().unwrap().as_ref() {
            instances.launch_for_stack(name, tags);
        }
    }

    fn new_id(&self, name: &str) -> String {
        let mut next = self.next_id.lock().unwrap();
        *next += 1;
        format!("arn:aws:cloudformation:us-east-1:000000000000:stack/{name}/fake-{next}")
    }

    /// Puts a stack of the shipped profiles' default version in `status` now, optionally moving to
    /// `then` after `after`.
    pub fn seed(&self, name: &str, status: &str, then: Option<(Duration, &str)>) {
        self.seed_version(name, SEEDED_VERSION, status, then);
    }

    /// Puts a stack running `version` in `status` now, optionally moving to `then` after `after`.
    pub fn seed_version(&self, name: &str, version: &str, status: &str, then: Option<(Duration, &str)>) {
        let now = self.clock.now();
        let mut timeline = vec![(now, status.to_owned())];
        if let Some((after, next)) = then {
            timeline.push((now + SignedDuration::try_from(after).unwrap(), next.to_owned()));
        }
        let id = self.new_id(name);
        let parameters = BTreeMap::from([("Version".to_owned(), version.to_owned())]);
        // The tags a deploy gives a cluster's stack.
        let tags = BTreeMap::from([
            (tags::PROVISIONER.to_owned(), "true".to_owned()),
            (tags::KIND.to_owned(), tags::CLUSTER_KIND.to_owned()),
        ]);
        self.launch_stack_instances(name, &tags);
        self.stacks
            .lock()
            .unwrap()
            .insert(name.to_owned(), FakeStack { id, created_at: now, parameters, tags, timeline });
    }

    pub fn set_behaviour(&self, behaviour: StackBehaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub fn status(&self, name: &str) -> Option<String> {
        let now = self.clock.now();
        self.stacks.lock().unwrap().get(name).map(|s| s.status_at(now).to_owned()).filter(|s| s != "DELETE_COMPLETE")
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn count(&self, wanted: fn(&Call) -> bool) -> usize {
        self.calls.lock().unwrap().iter().filter(|c| wanted(c)).count()
    }

    pub fn created(&self) -> Vec<StackSpec> {
        self.created.lock().unwrap().clone()
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

#[async_trait]
impl Stacks for FakeStacks {
    async fn describe(&self, name: &str) -> Result<Option<StackSnapshot>> {
        self.record(Call::DescribeStack(name.to_owned()));
        let effect = self.faults.draw("DescribeStacks").await?;
        let now = self.clock.now();
        let stacks = self.stacks.lock().unwrap();
        effect.answer(stacks.get(name).and_then(|stack| stack.snapshot(name, now)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<StackSnapshot>> {
        self.record(Call::ListStacks(prefix.to_owned()));
        let effect = self.faults.draw("DescribeStacks").await?;
        let now = self.clock.now();
        let stacks = self.stacks.lock().unwrap();
        let listed = stacks.iter().filter(|(name, _)| name.starts_with(prefix));
        effect.answer(listed.filter_map(|(name, stack)| stack.snapshot(name, now)).collect())
    }

    async fn create(&self, spec: &StackSpec) -> Result<String> {
        self.record(Call::CreateStack(spec.name.clone()));
        let effect = self.faults.draw("CreateStack").await?;
        let now = self.clock.now();
        let behaviour = self.behaviour.lock().unwrap().clone();
        let mut stacks = self.stacks.lock().unwrap();
        if stacks.get(&spec.name).is_some_and(|s| s.status_at(now) != "DELETE_COMPLETE") {
            return Err(fake_failure("CreateStack", "AlreadyExistsException", AwsErrorKind::Conflict));
        }
        let id = self.new_id(&spec.name);
        let done = now + SignedDuration::try_from(behaviour.create_takes).unwrap();
        let mut timeline = vec![(now, "CREATE_IN_PROGRESS".to_owned())];
        if behaviour.create_ends_in == "ROLLBACK_COMPLETE" {
            timeline.push((done - SignedDuration::from_secs(1), "ROLLBACK_IN_PROGRESS".to_owned()));
        }
        timeline.push((done, behaviour.create_ends_in.to_owned()));
        let parameters = spec.parameters.iter().cloned().collect();
        let tags: BTreeMap<String, String> = spec.tags.iter().cloned().collect();
        self.launch_stack_instances(&spec.name, &tags);
        stacks.insert(spec.name.clone(), FakeStack { id: id.clone(), created_at: now, parameters, tags, timeline });
        self.created.lock().unwrap().push(spec.clone());
        effect.answer(id)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.record(Call::DeleteStack(name.to_owned()));
        let effect = self.faults.draw("DeleteStack").await?;
        let now = self.clock.now();
        let behaviour = self.behaviour.lock().unwrap().clone();
        let mut stacks = self.stacks.lock().unwrap();
        let Some(stack) = stacks.get_mut(name) else { return effect.answer(()) };
        let status = stack.status_at(now).to_owned();
        if status == "DELETE_COMPLETE" || status == "DELETE_IN_PROGRESS" {
            return effect.answer(());
        }
        if StackStatus::new(status.as_str()).phase() == StackPhase::InProgress {
            return Err(fake_failure("DeleteStack", "ValidationError", AwsErrorKind::Other));
        }
        stack.timeline.retain(|(from, _)| *from <= now);
        stack.timeline.push((now, "DELETE_IN_PROGRESS".to_owned()));
        if let Some(instances) = self.instances.lock().unwrap().as_ref() {
            instances.end_stack(name);
        }
        stack.timeline.push((
            now + SignedDuration::try_from(behaviour.delete_takes).unwrap(),
            behaviour.delete_ends_in.to_owned(),
        ));
        effect.answer(())
    }

    async fn failure_reasons(&self, name: &str) -> Result<Vec<String>> {
        self.record(Call::StackEvents(name.to_owned()));
        self.faults.draw("DescribeStackEvents").await?.answer(())?;
        Ok(self.behaviour.lock().unwrap().failure_reasons.clone())
    }
}
