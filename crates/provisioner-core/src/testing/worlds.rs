//! Worlds of fakes: each side of the provisioner put together over fresh fakes and the shipped
//! catalog by its one constructor, as the functions put it together over AWS.

use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;

use super::{
    FakeClusterLogs, FakeHistory, FakeImages, FakeInstances, FakeLaunchLog, FakeLocks, FakeNotices, FakeRuns,
    FakeSchedules, FakeSpend, FakeStacks, FakeTestHistory, Faults, TestClock,
};
use crate::catalog::Catalog;
use crate::ports::{Clock, ClusterPorts, RunPorts};
use crate::service::run::Runner;
use crate::service::survey::Operations;
use crate::service::{Invocation, Provisioner};
use crate::settings::{ClusterSettings, RunSettings};

/// The account settings of the tests: every setting the shipped cluster template takes.
pub fn test_settings() -> ClusterSettings {
    [
        ("Domain", "slideruleearth.io"),
        ("HostedZoneId", "Z0000000000000000TEST"),
        ("ContainerRegistry", "000000000000.dkr.ecr.us-west-2.amazonaws.com"),
        ("ProjectBucket", "sliderule"),
        ("ProjectPublicBucket", "sliderule-public"),
        ("LogBucket", "sliderule-provisioner-runs"),
        ("ProjectFolder", "cf"),
        ("JwtIssuer", "https://login.slideruleearth.io"),
        ("PublicDataBuckets", "sliderule-public,prd-tnm"),
        ("EnvironmentVersion", "test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The account settings of the tests' runs.
pub fn test_run_settings() -> RunSettings {
    RunSettings {
        region: "us-west-2".into(),
        table: "sliderule-provisioner".into(),
        log_bucket: "sliderule-provisioner-runs".into(),
        repository: "https://github.com/SlideRuleEarth/sliderule.git".into(),
        build_image: "123456789012.dkr.ecr.us-west-2.amazonaws.com/sliderule-buildenv:latest".into(),
        registry: "123456789012.dkr.ecr.us-west-2.amazonaws.com".into(),
        domain: "slideruleearth.io".into(),
        project_bucket: "sliderule".into(),
        project_folder: "cf".into(),
        github_token_secret: Some("ci/github-token".into()),
        step_role_arn: Some("arn:aws:iam::123456789012:role/sliderule-provisioner-test-step".into()),
        test_instance_profile: Some("sliderule-provisioner-runner".into()),
        build_instance_profile: Some("sliderule-provisioner-builder".into()),
        subnets: vec!["subnet-a".into(), "subnet-b".into()],
        security_groups: vec![],
        runner_roles: crate::domain::attempt::RunnerRoles {
            test: Some("AROATESTRUNNER".into()),
            build: Some("AROABUILDRUNNER".into()),
        },
    }
}

/// A provisioner over fresh fakes and the shipped catalog.
pub struct World {
    pub clock: Arc<TestClock>,
    /// Shared by every fake of the world; injects nothing until told to.
    pub faults: Arc<Faults>,
    pub stacks: Arc<FakeStacks>,
    pub schedules: Arc<FakeSchedules>,
    pub locks: Arc<FakeLocks>,
    pub images: Arc<FakeImages>,
    pub history: Arc<FakeHistory>,
    /// The run records a [`RunWorld`] sharing this world writes.
    pub runs: Arc<FakeRuns>,
    /// The profiles' books, shared with such a [`RunWorld`].
    pub spend: Arc<FakeSpend>,
    pub logs: Arc<FakeClusterLogs>,
    pub notices: Arc<FakeNotices>,
    pub provisioner: Provisioner,
}

impl World {
    pub fn new(now: &str) -> World {
        let clock = TestClock::starting_at(now.parse().expect("a test time"));
        let faults = Faults::none();
        let stacks = FakeStacks::new(clock.clone(), faults.clone());
        let schedules = FakeSchedules::new(faults.clone());
        let locks = FakeLocks::new(faults.clone());
        let notices = FakeNotices::new(faults.clone());
        let catalog = Catalog::shipped().expect("the shipped catalog loads");
        // As in an account after a release: each profile's default version is in the registry.
        let images = FakeImages::new(faults.clone());
        let history = FakeHistory::new(faults.clone());
        let logs = FakeClusterLogs::new(faults.clone());
        let runs = FakeRuns::new(faults.clone());
        let spend = FakeSpend::new(faults.clone());
        for profile in catalog.profiles() {
            images.push(&profile.images, profile.default_version.as_str());
        }
        let ports = ClusterPorts {
            stacks: stacks.clone(),
            schedules: schedules.clone(),
            locks: locks.clone(),
            images: images.clone(),
            history: history.clone(),
            spend: spend.clone(),
            logs: logs.clone(),
            notices: notices.clone(),
            clock: clock.clone(),
        };
        let provisioner = Provisioner::new(Arc::new(catalog), ports, test_settings());
        World { clock, faults, stacks, schedules, locks, images, history, runs, spend, logs, notices, provisioner }
    }

    /// An invocation with the Lambda maximum of 15 minutes left.
    pub fn invocation(&self, request_id: &str) -> Invocation {
        self.invocation_with(request_id, Duration::from_secs(15 * 60))
    }

    pub fn invocation_with(&self, request_id: &str, left: Duration) -> Invocation {
        Invocation {
            request_id: request_id.to_owned(),
            deadline: self.clock.now() + SignedDuration::try_from(left).unwrap(),
        }
    }
}

/// A runner over fresh fakes and the shipped catalog.
pub struct RunWorld {
    pub clock: Arc<TestClock>,
    pub faults: Arc<Faults>,
    pub runs: Arc<FakeRuns>,
    pub instances: Arc<FakeInstances>,
    /// The clusters and histories a [`World`] shared with it has, which the recount reads.
    pub stacks: Arc<FakeStacks>,
    pub history: Arc<FakeHistory>,
    pub spend: Arc<FakeSpend>,
    pub notices: Arc<FakeNotices>,
    pub test_history: Arc<FakeTestHistory>,
    pub launch_log: Arc<FakeLaunchLog>,
    pub runner: Runner,
}

impl RunWorld {
    pub fn new(now: &str) -> RunWorld {
        let clock = TestClock::starting_at(now.parse().expect("a test time"));
        let faults = Faults::none();
        let runs = FakeRuns::new(faults.clone());
        let (stacks, history) = (FakeStacks::new(clock.clone(), faults.clone()), FakeHistory::new(faults.clone()));
        let shared = Shared {
            stacks,
            history,
            spend: FakeSpend::new(faults.clone()),
            notices: FakeNotices::new(faults.clone()),
        };
        RunWorld::over(clock, faults, runs, shared)
    }

    /// A runner over the clock, faults, run records, stacks, history and alert topic of `world`.
    pub fn sharing(world: &World) -> RunWorld {
        let shared = Shared {
            stacks: world.stacks.clone(),
            history: world.history.clone(),
            spend: world.spend.clone(),
            notices: world.notices.clone(),
        };
        RunWorld::over(world.clock.clone(), world.faults.clone(), world.runs.clone(), shared)
    }

    fn over(clock: Arc<TestClock>, faults: Arc<Faults>, runs: Arc<FakeRuns>, shared: Shared) -> RunWorld {
        let Shared { stacks, history, spend, notices } = shared;
        let instances = FakeInstances::new(clock.clone(), faults.clone());
        // CloudFormation launches the clusters' instances where the runs' are.
        stacks.launch_instances_in(instances.clone());
        let test_history = FakeTestHistory::new(faults.clone());
        let launch_log = FakeLaunchLog::new(faults.clone());
        let ports = RunPorts {
            runs: runs.clone(),
            instances: instances.clone(),
            test_history: test_history.clone(),
            launch_log: launch_log.clone(),
            spend: spend.clone(),
            notices: notices.clone(),
            clock: clock.clone(),
        };
        let catalog = Arc::new(Catalog::shipped().expect("the shipped catalog loads"));
        let runner = Runner::new(catalog, ports, test_run_settings());
        RunWorld { clock, faults, runs, instances, stacks, history, spend, notices, test_history, launch_log, runner }
    }

    pub fn invocation(&self, request_id: &str) -> Invocation {
        Invocation { request_id: request_id.to_owned(), deadline: self.clock.now() + SignedDuration::from_mins(15) }
    }
}

/// What a run world shares with a cluster world.
struct Shared {
    stacks: Arc<FakeStacks>,
    history: Arc<FakeHistory>,
    spend: Arc<FakeSpend>,
    notices: Arc<FakeNotices>,
}

/// Both sides over one clock, one set of faults and one alert topic, and the operations over them.
pub struct OpsWorld {
    pub world: World,
    pub runs: RunWorld,
    pub operations: Operations,
}

impl OpsWorld {
    pub fn new(now: &str) -> OpsWorld {
        let world = World::new(now);
        let runs = RunWorld::sharing(&world);
        let operations = Operations::new(world.provisioner.clone(), runs.runner.clone());
        OpsWorld { world, runs, operations }
    }
}
