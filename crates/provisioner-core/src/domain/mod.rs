//! Validated inputs and the rules that do not depend on any cloud call, for clusters and for runs.

pub mod attempt;
pub mod books;
pub mod cluster_logs;
pub mod history;
pub mod instance_event;
pub mod launch_log;
pub mod names;
pub mod requests;
pub mod resource_names;
pub mod run;
pub mod runner_image;
pub mod stack_status;
pub mod test_results;
pub mod time;
pub mod user_data;

pub use attempt::{Attempt, AttemptOutcome, Market};
pub use history::{HistoryEntry, OnceNotice};
pub use instance_event::{InstanceChange, InstanceEvent};
pub use names::{ClusterName, GitRef, ImageTag, RequestedBy};
pub use requests::{ClusterRequest, DeployRequest, ScheduleDestroyRequest};
pub use resource_names::tags;
pub use run::{
    CancelRequest, RunId, RunKind, RunRecord, RunRequest, RunState, RunnerImageRequest, StepResult, StepStatus,
};
pub use runner_image::RunnerImage;
pub use stack_status::{StackPhase, StackStatus};
pub use user_data::{UserData, EC2_USER_DATA_LIMIT, USER_DATA_BUDGET};
