//! In-memory fakes of every port, one file each, that record what was asked of them; a clock that
//! follows tokio's (pausable) time (stacks and locks read it, so a test moves time, not sleeps);
//! the faults they inject; and worlds that put each side together over them. What every
//! implementation of a port promises, fake or adapter: [`contract`].

mod clock;
mod cluster_logs;
pub mod contract;
#[cfg(test)]
mod fault_storm;
mod faults;
mod history;
mod images;
mod instances;
mod launch_log;
mod locks;
mod notices;
pub mod requests;
mod runs;
mod schedules;
mod spend;
mod stacks;
mod test_history;
mod worlds;

pub use clock::TestClock;
pub use cluster_logs::{Copying, FakeClusterLogs};
pub use faults::{Call, Effect, Fault, Faults};
pub use history::FakeHistory;
pub use images::{FakeImages, SEEDED_VERSION};
pub use instances::{FakeInstance, FakeInstances};
pub use launch_log::FakeLaunchLog;
pub use locks::FakeLocks;
pub use notices::FakeNotices;
pub use runs::FakeRuns;
pub use schedules::FakeSchedules;
pub use spend::FakeSpend;
pub use stacks::{FakeStacks, StackBehaviour};
pub use test_history::FakeTestHistory;
pub use worlds::{test_run_settings, test_settings, OpsWorld, RunWorld, World};
