//! The SlideRule Provisioner's domain: validated inputs, the decision tables of the spec, the
//! ports they run over, and the AWS adapters behind those ports.
//!
//! # Where each behaviour of the spec lives
//!
//! - DEPLOY(cluster): [`service`] `deploy.rs`
//! - DEPLOY of a version: its image tag, `ImagesMissing`, the version a running cluster has: [`service`]
//!   `deploy.rs`, [`domain::names::ImageTag::to_deploy`], [`ports::Images`]
//! - what a cluster is (network, ILB, monitor, nodes, DNS, roles, bootstrap per role):
//!   `clusters/sliderule-cluster.yaml`
//! - the account's settings cluster stacks take: [`settings::CLUSTER_SETTINGS`], [`catalog::is_provided`]
//! - SCHEDULE_DESTROY(cluster, time_to_destroy), the 5-minute guard: [`service`] `schedule_destroy.rs`,
//!   [`domain::time`]
//! - DESTROY(cluster): [`service`] `destroy.rs`
//! - waiting up to 10 minutes for a stack: [`service`] `wait.rs` ([`service::STACK_WAIT_LIMIT`])
//! - one operation per cluster: one-minute leases renewed while working, longest waiter next: [`service`]
//!   `lock.rs`, [`ports::Locks`]
//! - what each CloudFormation status means: [`domain::stack_status`]
//! - valid cluster names (reserved names) and events; RFC 3339 times: [`domain::names`], [`domain::requests`],
//!   [`domain::time`]
//! - payloads the runtime cannot take (not JSON, nested past 127 levels, duplicate keys): [`lambda`]
//!   `screen_payload`
//! - which clusters exist and their templates: [`catalog`], `clusters/`
//! - TEST(cluster, version), BUILD(cluster, version): [`service::run`]
//! - TEST/BUILD: the steps an instance runs, and its user-data: [`instance::plan`], [`instance::script`];
//!   the user-data gzip-compressed within EC2's 16 KB: [`domain::user_data`]
//! - TEST/BUILD: repository layouts, steps that are not applicable: [`instance::plan::Layout`],
//!   `clusters/catalog.yaml`
//! - BUILD: the image tag of a version: [`domain::names::ImageTag`]
//! - run ids, run records, step states, `run_id` resumes: [`domain::run`]
//! - the DynamoDB items (locks, runs, active-run pointers): [`table`]
//! - the names and tags of what the provisioner makes (stacks `sliderule-cluster-<name>`, destroy
//!   schedules, instance tags): [`domain::resource_names`]; a run's client token and log location:
//!   [`domain::RunId`]
//! - a run never loses its instance: unclear launches, instances found by tag: [`service::run`] `launch.rs` (`launch_resolved`)
//! - attempts: retries of what the cloud ended (interrupted, lost, boot timeout, capacity), the
//!   on-demand last attempt and fallback, `instance_event`, holds: [`service::run`] `progress.rs`, `conclude.rs`,
//!   [`domain::attempt`], [`domain::instance_event`]; the profile's `max_attempts`,
//!   `on_demand_fallback`, `boot_timeout_minutes`: [`catalog::RunnerProfile`]
//! - a run's time limit: `RunTimedOut`, its attempt `timed_out`, never retried: [`service::run`]
//!   `progress.rs` (`time_out`), [`domain::RunRecord::timed_out`]; the deadman's shutdown reported as such:
//!   [`instance::script`] (`going_away`)
//! - what each resource is (`sliderule:kind`: a run's, an image run's, a cluster's), which the
//!   sweeper and the roles' grants select by: [`domain::resource_names`] (`tags::KIND`),
//!   [`ports::Instances::of_runs`], `template.yaml`
//! - exact caps: every check first, the slot last, freed by others only after
//!   [`service::run::SLOT_LEASE`]: [`service::run`] `start.rs` (`take_slot`, `slot_abandoned`); leaked
//!   slots reclaimed by [`service::sweeper`] (`FreeSlot`)
//! - the clock the functions read, which the local stack moves (`make local-advance`):
//!   [`settings::Settings::clock`], [`ports::MovedClock`]; a day in the life: on fakes that
//!   behave like the cloud, [`service`] `day_tests.rs`; on the local stack, `tests/tests/day`
//! - CANCEL(run_id): [`service::run`] `conclude.rs` (`Runner::cancel`)
//! - RUNNER_IMAGE: the image run, imaging its instance, the image a TEST run launches from, the
//!   steps it holds: [`service::run`] `image.rs`, [`domain::runner_image`] (`choose`, `to_retire`),
//!   [`instance::plan::ImageRole`], the catalog's `runner_image` and `runner_image_max_age_days`;
//!   retired by [`service::sweeper`]
//! - who asked (`requested_by`), recorded on stacks, schedules, runs and instances:
//!   [`domain::names::RequestedBy`], [`domain::requests`]; shown by [`service::status`]
//! - a cluster's history (400 days, `status {"cluster"}`): [`domain::history`], [`ports::History`],
//!   [`service`] (`record_history`), [`service::status`] (`status_of_cluster`)
//! - DRY_RUN (the plan, reads only): [`service::plan`]; each function's `plan_*` beside it
//! - logs kept before a destroy (Run Command): [`service`] `destroy.rs` (`keep_logs`),
//!   [`domain::cluster_logs`], [`ports::ClusterLogs`]
//! - the warning 30 minutes before a scheduled destroy: [`service::sweeper`] (`warn`, `WARN_BEFORE`)
//! - a budget per profile (`monthly_budget_usd`): each profile's books (spend kept as it happens,
//!   one read per check): [`domain::books`], [`ports::Spend`]; `BudgetExceeded`, spend in status:
//!   [`service::budget`] (`Ledger::allow`, `recount`); the sweeper's daily recount that corrects
//!   them: [`service::recount`]; where costs begin and end: [`service`] `deploy.rs`, `destroy.rs`,
//!   [`service::run`] `costs.rs`; the 80/100 % alerts: [`service::sweeper`] (`alert_budget`)
//! - live and last ended runs without a scan (status, the sweeper): [`ports::Runs`] (`live`,
//!   `ended`, `last_ended`), the items in [`table`]; what a request costs as history grows:
//!   `bench/growth.py`
//! - the instance's side of attempts (IMDSv2 spot notice watcher, reports fenced by attempt, the
//!   hold at power-off): [`instance::script`]
//! - what an AWS failure means (throttled, refused, capacity, quota, unknown outcome): [`error::AwsErrorKind`],
//!   [`aws`]
//! - the invariants under faults and crashes (the fault storm): [`testing`] `fault_storm.rs`, [`testing::Faults`]
//! - a profile's default and maximum lifetime (`default_ttl_minutes`, `max_ttl_minutes`), its caps on
//!   concurrent runs, the price table: [`catalog`], `clusters/catalog.yaml`; applied in [`service`] `deploy.rs`
//!   (`schedule_default_destroy`), `schedule_destroy.rs`, [`service::run`] (`check_cap`)
//! - the sweeper's rules: [`service::sweeper`] ([`service::sweeper::findings`]); the status report:
//!   [`service::status`]; the survey both start from: [`service::survey`]
//! - alerts (failed deploys, destroys and runs, sweeper actions): [`ports::Notices`], [`service`] `alert`,
//!   [`aws::sns`]; alarms and the sweeper's schedule: `template.yaml`
//! - metrics (embedded metric format log lines): [`metrics`]
//! - valid versions (git refs): [`domain::names::GitRef`]
//! - error codes of the contract: [`error`]
//! - what is asked of AWS: [`ports`]; adapters in [`aws`]; each side put together by one constructor
//!   (`Provisioner::new`, `service::run::Runner::new`, `service::survey::Operations::new`) over
//!   [`ports::ClusterPorts`] or [`ports::RunPorts`], which [`wiring`] builds from the adapters
//! - what each function is built from: `functions/*/src/main.rs`
//! - the Lambda glue (events in, responses and `errorType` out): [`lambda`]
//! - the settings the template gives the functions: [`settings`]
//! - fakes of every port, for tests: [`testing`]; what every implementation of a port promises: [`testing::contract`]

pub mod aws;
pub mod catalog;
pub mod domain;
pub mod error;
pub mod instance;
pub mod lambda;
pub mod metrics;
pub mod ports;
pub mod service;
pub mod settings;
pub mod table;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod wiring;

#[cfg(test)]
mod docs_tests;

pub use error::{Error, Result};
