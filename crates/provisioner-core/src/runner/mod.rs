//! TEST and BUILD runs on time-limited spot instances: the plan of named steps an instance runs,
//! and the user-data script rendered from it.

pub mod plan;
pub mod run;
pub mod script;

pub use plan::{Condition, Layout, Plan, Step, StepPlace};
pub use run::{RunId, RunKind, RunRecord, RunRequest, RunState, StepResult, StepStatus, RUN_ID_TAG};
pub use script::{render, shell_quote, RunValues};
