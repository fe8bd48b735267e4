//! The SlideRule Provisioner's domain: validated inputs, the decision tables of the spec, the
//! ports they run over, and the AWS adapters behind those ports.
//!
//! # Layout
//!
//! | spec behaviour | where |
//! | --- | --- |
//! | DEPLOY(cluster) | [`service`] `deploy.rs` |
//! | DEPLOY of a version: its image tag, `ImagesMissing`, the version a running cluster answers with | [`service`] `deploy.rs`, [`domain::names::ImageTag::to_deploy`], [`ports::Images`] (adapter `aws/ecr.rs`, feature `ecr`) |
//! | what a cluster is (network, ILB, monitor, nodes, DNS, roles, bootstrap per role) | `clusters/sliderule-cluster.yaml` |
//! | the account's settings cluster stacks take | [`catalog::PROVIDED_PARAMETERS`], `lambda.rs` `CLUSTER_SETTING_ENVS` |
//! | SCHEDULE_DESTROY(cluster, time_to_destroy), the 5-minute guard | [`service`] `schedule_destroy.rs`, [`domain::time`] |
//! | DESTROY(cluster) | [`service`] `destroy.rs` |
//! | waiting up to 10 minutes for a stack | [`service`] `wait.rs` ([`service::STACK_WAIT_LIMIT`]) |
//! | one operation per cluster at a time: one-minute leases renewed while working, the longest waiter next | [`service`] `lock.rs`, [`ports::Locks`] |
//! | what each CloudFormation status means | [`domain::stack_status`] |
//! | valid cluster names (reserved names) and events; RFC 3339 times | [`domain::names`], [`domain::requests`], [`domain::time`] |
//! | payloads the runtime cannot take (not JSON, nested past 127 levels, duplicate keys) | `lambda.rs` `screen_payload` |
//! | which clusters exist and their templates | [`catalog`], `clusters/` |
//! | TEST(cluster, version), BUILD(cluster, version) | [`service::run`] |
//! | TEST/BUILD: the steps an instance runs, and its user-data | [`runner::plan`], [`runner::script`] |
//! | TEST/BUILD: repository layouts, steps that are not applicable | [`runner::plan::Layout`], [`runner::plan::Condition`], `clusters/catalog.yaml` |
//! | BUILD: the image tag of a version | [`domain::names::ImageTag`] |
//! | run ids, run records, `run_id` resumes | [`runner::run`] |
//! | a run never loses its instance: launches without a definite answer, instances found by tag | [`service::run`] (`launch_resolved`, `find_instance`) |
//! | what an AWS failure means (throttled, refused, or of unknown outcome) | [`error::AwsErrorKind`], `aws/mod.rs` |
//! | the invariants under faults and crashes (the fault storm) | [`service`] `fault_storm.rs`, [`testing::Faults`] |
//! | valid versions (git refs) | [`domain::names::GitRef`] |
//! | error codes of the contract | [`error`] |
//! | what is asked of AWS | [`ports`]; adapters in `aws/` (features `cloudformation`, `scheduler`, `dynamodb`, `ec2`, `ecr`) |
//! | the Lambda glue (events in, responses and `errorType` out) | `lambda.rs` (feature `lambda`) |
//! | fakes for tests | `testing.rs` (feature `testing`) |

pub mod catalog;
pub mod domain;
pub mod error;
pub mod ports;
pub mod runner;
pub mod service;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(any(feature = "lambda", feature = "lambda-runs"))]
pub mod lambda;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, Result};
