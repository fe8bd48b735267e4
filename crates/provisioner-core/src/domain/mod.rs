//! Validated inputs and the rules that do not depend on any cloud call.

pub mod names;
pub mod requests;
pub mod stack_status;
pub mod time;

pub use names::{ClusterName, GitRef, ImageTag};
pub use requests::{ClusterRequest, DeployRequest, ScheduleDestroyRequest};
pub use stack_status::{StackPhase, StackStatus};
