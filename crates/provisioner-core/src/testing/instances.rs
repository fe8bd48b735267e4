//! EC2 in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;

use super::faults::fake_failure;
use super::Faults;
use crate::domain::{tags, InstanceEvent, Market, RunId, RunKind, RunnerImage};
use crate::error::{AwsErrorKind, Result};
use crate::ports::{Clock, InstanceState, Instances, LaunchSpec, TaggedInstance};

/// One instance EC2 knows.
#[derive(Debug, Clone)]
pub struct FakeInstance {
    pub state: InstanceState,
    pub instance_type: String,
    pub launched_at: Timestamp,
    pub tags: Vec<(String, String)>,
    pub client_token: String,
    pub market: Market,
}

impl FakeInstance {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Not yet terminating: it costs money.
    pub fn live(&self) -> bool {
        self.state.is_live()
    }
}

/// EC2 in memory: records launches (one instance per client token), refuses instance types
/// without spot (or on-demand) capacity, full subnets, and everything once the quota is reached.
pub struct FakeInstances {
    clock: Arc<dyn Clock>,
    faults: Arc<Faults>,
    no_capacity: Mutex<Vec<String>>,
    no_on_demand_capacity: Mutex<Vec<String>>,
    full_subnets: Mutex<Vec<String>>,
    quota_reached: Mutex<bool>,
    launches: Mutex<Vec<LaunchSpec>>,
    instances: Mutex<BTreeMap<String, FakeInstance>>,
    terminated: Mutex<Vec<String>>,
    images: Mutex<BTreeMap<String, RunnerImage>>,
    /// Images that `create_image` makes stay `pending` while set.
    images_pending: Mutex<bool>,
    /// Stacks being deleted: their Auto Scaling groups replace nothing.
    deleted_stacks: Mutex<Vec<String>>,
    /// What EC2 does later (an instance a spot interruption reclaims two minutes after its
    /// warning), and the events it sends EventBridge, each from the time it is due.
    later: Mutex<Vec<(Timestamp, Later)>>,
    sent: Mutex<u32>,
}

/// Something EC2 does at its time.
#[derive(Debug, Clone)]
enum Later {
    State(String, InstanceState),
    Event(InstanceEvent),
}

/// What CloudFormation makes of a cluster's stack: its logical ids, and whether an Auto Scaling
/// group launched it (then it is replaced when terminated while the stack stands).
const STACK_INSTANCES: [(&str, bool); 3] = [("ILB", false), ("Monitor", false), ("Nodes", true)];

impl FakeInstances {
    /// Launches of `instance_type` are refused for capacity until [`Self::capacity_back`].
    pub fn no_capacity_for(&self, instance_type: &str) {
        self.no_capacity.lock().unwrap().push(instance_type.to_owned());
    }

    /// Launches of `instance_type` are refused for capacity on demand too.
    pub fn no_on_demand_capacity_for(&self, instance_type: &str) {
        self.no_capacity_for(instance_type);
        self.no_on_demand_capacity.lock().unwrap().push(instance_type.to_owned());
    }

    pub fn capacity_back(&self) {
        self.no_capacity.lock().unwrap().clear();
        self.no_on_demand_capacity.lock().unwrap().clear();
    }

    /// Launches into `subnet` are refused: it has no free address.
    pub fn fill_subnet(&self, subnet: &str) {
        self.full_subnets.lock().unwrap().push(subnet.to_owned());
    }

    /// Every launch is refused for the account's quota while `reached`.
    pub fn set_quota_reached(&self, reached: bool) {
        *self.quota_reached.lock().unwrap() = reached;
    }

    pub fn new(clock: Arc<dyn Clock>, faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeInstances {
            clock,
            faults,
            no_capacity: Mutex::default(),
            no_on_demand_capacity: Mutex::default(),
            full_subnets: Mutex::default(),
            quota_reached: Mutex::default(),
            launches: Mutex::default(),
            instances: Mutex::default(),
            terminated: Mutex::default(),
            images: Mutex::default(),
            images_pending: Mutex::default(),
            deleted_stacks: Mutex::default(),
            later: Mutex::default(),
            sent: Mutex::default(),
        })
    }

    /// EC2's event (`detail` names the instance), as EventBridge delivers it.
    fn event(&self, detail_type: &str, detail: serde_json::Value) -> InstanceEvent {
        let mut sent = self.sent.lock().unwrap();
        *sent += 1;
        InstanceEvent::parse(serde_json::json!({
            "version": "0", "id": format!("00000000-0000-4000-8000-{:012}", *sent), "detail-type": detail_type,
            "source": "aws.ec2", "account": "123456789012", "time": self.clock.now().to_string(),
            "region": "us-west-2", "resources": [], "detail": detail
        }))
        .expect("an EC2 event")
    }

    /// EC2's event that `instance_id` entered `state`.
    fn state_change(&self, instance_id: &str, state: &str) -> InstanceEvent {
        let detail = serde_json::json!({"instance-id": instance_id, "state": state});
        self.event(crate::domain::instance_event::STATE_CHANGE, detail)
    }

    fn at(&self, after: jiff::SignedDuration, later: Later) {
        self.later.lock().unwrap().push((self.clock.now() + after, later));
    }

    /// The instance powers itself off (its deadman, or its run's end): shutting-down now,
    /// terminated a minute later, and EC2's state-change events for both.
    pub fn shut_down(&self, instance_id: &str) {
        self.set_state(instance_id, Some(InstanceState::ShuttingDown));
        self.at(jiff::SignedDuration::ZERO, Later::Event(self.state_change(instance_id, "shutting-down")));
        let minute = jiff::SignedDuration::from_mins(1);
        self.at(minute, Later::State(instance_id.to_owned(), InstanceState::Terminated));
        self.at(minute, Later::Event(self.state_change(instance_id, "terminated")));
    }

    /// A spot interruption: the warning now, and two minutes later EC2 reclaims the instance
    /// (shutting-down, then terminated), with the events of each.
    pub fn interrupt(&self, instance_id: &str) {
        let warning = self.event(
            crate::domain::instance_event::SPOT_WARNING,
            serde_json::json!({"instance-id": instance_id, "instance-action": "terminate"}),
        );
        self.at(jiff::SignedDuration::ZERO, Later::Event(warning));
        let two = jiff::SignedDuration::from_mins(2);
        self.at(two, Later::State(instance_id.to_owned(), InstanceState::ShuttingDown));
        self.at(two, Later::Event(self.state_change(instance_id, "shutting-down")));
        let three = jiff::SignedDuration::from_mins(3);
        self.at(three, Later::State(instance_id.to_owned(), InstanceState::Terminated));
        self.at(three, Later::Event(self.state_change(instance_id, "terminated")));
    }

    /// What EC2 did by now: applies the state changes that came due and answers the events
    /// EventBridge delivers, in order.
    pub fn due_events(&self) -> Vec<InstanceEvent> {
        let now = self.clock.now();
        let mut later = self.later.lock().unwrap();
        let (due, rest): (Vec<_>, Vec<_>) = later.drain(..).partition(|(at, _)| *at <= now);
        *later = rest;
        drop(later);
        let mut events = Vec::new();
        for (_, what) in due {
            match what {
                Later::State(id, state) => self.set_state(&id, Some(state)),
                Later::Event(event) => events.push(event),
            }
        }
        events
    }

    /// What CloudFormation does for a stack it creates: it launches the stack's instances, each
    /// carrying the stack's tags and its name (and an Auto Scaling group's name, for the nodes).
    pub fn launch_for_stack(&self, stack: &str, stack_tags: &BTreeMap<String, String>) {
        self.deleted_stacks.lock().unwrap().retain(|name| name != stack);
        let mut instances = self.instances.lock().unwrap();
        for (logical_id, scaled) in STACK_INSTANCES {
            let mut tags: Vec<(String, String)> = stack_tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            tags.push((tags::CLOUDFORMATION_STACK.into(), stack.to_owned()));
            tags.push(("aws:cloudformation:logical-id".into(), logical_id.to_owned()));
            if scaled {
                tags.push((tags::AUTO_SCALING_GROUP.into(), format!("{stack}-{logical_id}")));
            }
            let id = format!("i-{:08}", instances.len() + 1);
            instances.insert(id.clone(), self.stack_instance(&id, tags));
        }
    }

    fn stack_instance(&self, id: &str, tags: Vec<(String, String)>) -> FakeInstance {
        FakeInstance {
            state: InstanceState::Running,
            instance_type: "c7g.xlarge".into(),
            launched_at: self.clock.now(),
            client_token: format!("stack-{id}"),
            tags,
            market: Market::OnDemand,
        }
    }

    /// What a stack's delete does to its instances: they go, and nothing replaces them.
    pub fn end_stack(&self, stack: &str) {
        self.deleted_stacks.lock().unwrap().push(stack.to_owned());
        for instance in self.instances.lock().unwrap().values_mut() {
            if instance.tag(tags::CLOUDFORMATION_STACK) == Some(stack) {
                instance.state = InstanceState::Terminated;
            }
        }
    }

    /// The instances of `stack` that ended while it stood (terminated by someone, not its delete).
    pub fn stack_instances_ended(&self, stack: &str) -> Vec<String> {
        let instances = self.instances.lock().unwrap();
        let terminated = self.terminated.lock().unwrap();
        terminated
            .iter()
            .filter(|id| instances.get(*id).is_some_and(|i| i.tag(tags::CLOUDFORMATION_STACK) == Some(stack)))
            .cloned()
            .collect()
    }

    /// A runner image EC2 lists, made outside this test's runs.
    pub fn put_image(&self, image: RunnerImage) {
        self.images.lock().unwrap().insert(image.id.clone(), image);
    }

    /// The runner images EC2 lists now, by id.
    pub fn images(&self) -> BTreeMap<String, RunnerImage> {
        self.images.lock().unwrap().clone()
    }

    /// Images made from now on stay `pending` while `pending`; setting it false makes every
    /// pending image available.
    pub fn set_images_pending(&self, pending: bool) {
        *self.images_pending.lock().unwrap() = pending;
        if !pending {
            for image in self.images.lock().unwrap().values_mut().filter(|image| image.state == "pending") {
                image.state = "available".into();
            }
        }
    }

    /// An instance started outside the provisioner's launch path (a stray, or one launched by
    /// an earlier version), running since now.
    pub fn put(&self, instance_id: &str, instance_type: &str, tags: &[(&str, &str)]) {
        let instance = FakeInstance {
            state: InstanceState::Running,
            instance_type: instance_type.to_owned(),
            launched_at: self.clock.now(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            client_token: format!("put-{instance_id}"),
            market: Market::Spot,
        };
        self.instances.lock().unwrap().insert(instance_id.to_owned(), instance);
    }

    /// Every launch asked for, including those refused.
    pub fn launches(&self) -> Vec<LaunchSpec> {
        self.launches.lock().unwrap().clone()
    }

    /// Every instance started, by id.
    pub fn instances(&self) -> BTreeMap<String, FakeInstance> {
        self.instances.lock().unwrap().clone()
    }

    /// The live instances `chosen` picks, as EC2 lists them.
    fn listed(&self, chosen: impl Fn(&FakeInstance) -> bool) -> Vec<TaggedInstance> {
        let instances = self.instances.lock().unwrap();
        instances
            .iter()
            .filter(|(_, i)| i.live() && chosen(i))
            .map(|(id, i)| TaggedInstance {
                id: id.clone(),
                state: i.state,
                instance_type: i.instance_type.clone(),
                launched_at: Some(i.launched_at),
                tags: i.tags.iter().cloned().collect(),
            })
            .collect()
    }

    pub fn terminated(&self) -> Vec<String> {
        self.terminated.lock().unwrap().clone()
    }

    /// What happens to an instance outside the provisioner (spot interruption, the deadman).
    pub fn set_state(&self, instance_id: &str, state: Option<InstanceState>) {
        let mut instances = self.instances.lock().unwrap();
        match state {
            Some(state) => {
                if let Some(instance) = instances.get_mut(instance_id) {
                    instance.state = state;
                }
            }
            None => {
                instances.remove(instance_id);
            }
        }
    }
}

#[async_trait]
impl Instances for FakeInstances {
    async fn latest_image(&self, architecture: &str) -> Result<String> {
        self.faults.draw("GetParameter").await?.answer(format!("ami-al2023-{architecture}"))
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<String> {
        self.launches.lock().unwrap().push(spec.clone());
        let effect = self.faults.draw("RunInstances").await?;
        if *self.quota_reached.lock().unwrap() {
            return Err(fake_failure("RunInstances", "VcpuLimitExceeded", AwsErrorKind::Quota));
        }
        if spec.subnet_id.as_ref().is_some_and(|subnet| self.full_subnets.lock().unwrap().contains(subnet)) {
            return Err(fake_failure("RunInstances", "InsufficientFreeAddressesInSubnet", AwsErrorKind::Subnet));
        }
        let refusing = match spec.market {
            Market::Spot => &self.no_capacity,
            Market::OnDemand => &self.no_on_demand_capacity,
        };
        if refusing.lock().unwrap().contains(&spec.instance_type) {
            return Err(fake_failure("RunInstances", "InsufficientInstanceCapacity", AwsErrorKind::Capacity));
        }
        let mut instances = self.instances.lock().unwrap();
        if let Some((id, _)) = instances.iter().find(|(_, i)| i.client_token == spec.client_token) {
            return effect.answer(id.clone());
        }
        let id = format!("i-{:08}", instances.len() + 1);
        let instance = FakeInstance {
            state: InstanceState::Running,
            instance_type: spec.instance_type.clone(),
            launched_at: self.clock.now(),
            tags: spec.tags.clone(),
            client_token: spec.client_token.clone(),
            market: spec.market,
        };
        instances.insert(id.clone(), instance);
        effect.answer(id)
    }

    async fn of_run(&self, run_id: &RunId) -> Result<Vec<TaggedInstance>> {
        let effect = self.faults.draw("DescribeInstances").await?;
        effect.answer(self.listed(|i| i.tag(tags::RUN_ID) == Some(run_id.as_str())))
    }

    async fn of_runs(&self) -> Result<Vec<TaggedInstance>> {
        let effect = self.faults.draw("DescribeInstances").await?;
        effect.answer(self.listed(|i| i.tag(tags::KIND).and_then(RunKind::parse).is_some()))
    }

    async fn state(&self, instance_id: &str) -> Result<Option<InstanceState>> {
        let effect = self.faults.draw("DescribeInstances").await?;
        effect.answer(self.instances.lock().unwrap().get(instance_id).map(|i| i.state))
    }

    async fn run_of(&self, instance_id: &str) -> Result<Option<RunId>> {
        let effect = self.faults.draw("DescribeInstances").await?;
        let instances = self.instances.lock().unwrap();
        let run_id = instances.get(instance_id).and_then(|i| i.tag(tags::RUN_ID)).and_then(|id| RunId::parse(id).ok());
        effect.answer(run_id)
    }

    async fn terminate(&self, instance_id: &str) -> Result<()> {
        let effect = self.faults.draw("TerminateInstances").await?;
        self.terminated.lock().unwrap().push(instance_id.to_owned());
        let mut instances = self.instances.lock().unwrap();
        let Some(instance) = instances.get_mut(instance_id).filter(|i| i.live()) else { return effect.answer(()) };
        instance.state = InstanceState::Terminated;
        // An Auto Scaling group of a standing stack launches a replacement, as EC2 Auto Scaling does.
        let replaced = instance.tag(tags::AUTO_SCALING_GROUP).is_some()
            && instance
                .tag(tags::CLOUDFORMATION_STACK)
                .is_some_and(|stack| !self.deleted_stacks.lock().unwrap().iter().any(|name| name == stack));
        if replaced {
            let tags = instance.tags.clone();
            let id = format!("i-{:08}", instances.len() + 1);
            instances.insert(id.clone(), self.stack_instance(&id, tags));
        }
        effect.answer(())
    }

    async fn runner_images(&self) -> Result<Vec<RunnerImage>> {
        let effect = self.faults.draw("DescribeImages").await?;
        effect.answer(self.images.lock().unwrap().values().cloned().collect())
    }

    async fn create_image(&self, instance_id: &str, name: &str, tags: &[(String, String)]) -> Result<String> {
        let effect = self.faults.draw("CreateImage").await?;
        if !self.instances.lock().unwrap().get(instance_id).is_some_and(|i| i.live()) {
            return Err(fake_failure("CreateImage", "InvalidInstanceID.NotFound", AwsErrorKind::NotFound));
        }
        let mut images = self.images.lock().unwrap();
        let id = format!("ami-{:017}", images.len() + 1);
        let state = if *self.images_pending.lock().unwrap() { "pending" } else { "available" };
        let tags = tags.iter().cloned().collect();
        let snapshots = vec![format!("snap-of-{name}")];
        let image = RunnerImage::from_tags(id.clone(), state.into(), Some(self.clock.now()), &tags, snapshots)
            .ok_or_else(|| fake_failure("CreateImage", "NotARunnerImage", AwsErrorKind::Other))?;
        images.insert(id.clone(), image);
        effect.answer(id)
    }

    async fn retire_image(&self, image: &RunnerImage) -> Result<()> {
        let effect = self.faults.draw("DeregisterImage").await?;
        self.images.lock().unwrap().remove(&image.id);
        effect.answer(())
    }
}
