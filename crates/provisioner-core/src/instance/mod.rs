//! What a TEST or BUILD instance runs: the plan of named steps, and the user-data script rendered
//! from it. The run itself (ids, records, states) is domain (`domain::run`).

pub mod plan;
pub mod script;

pub use plan::{Condition, ImageRole, Layout, Plan, ResultsFormat, Step, StepPlace, CHECKOUT_STEP};
pub use script::{longest_values, render, shell_quote, RunValues};
