//! The run side: TEST, BUILD and RUNNER_IMAGE runs, each a unique time-limited instance that runs
//! its plan, reports each step and is terminated when the run ends. One word for each thing: a
//! **run** is what a call starts (its record, `RunRecord`); an **attempt** is one instance's try at
//! it (a run has one, and more when the cloud ends one); the **instance** is the attempt's EC2
//! instance; the `Runner` is this side of the service. Cut by stage, in the order a run goes:
//!
//! - `ask.rs`: a call starts or resumes its run, waits, and answers;
//! - `start.rs`: the checks, the record and the slot of a new run, and its dry run;
//! - `launch.rs`: an attempt's instance launched (types, subnets, markets) and adopted;
//! - `learn.rs`: refused launches, interruptions and boot times noted, and the order they teach;
//! - `progress.rs`: a run under way checked, and an attempt the cloud ended followed by the next;
//! - `conclude.rs`: a run ended (its instances, record, slot, alert), `cancel`, holds;
//! - `costs.rs`: its attempts and held instance begun and settled in its profile's books;
//! - `results.rs`: a TEST run's per-test results compared with the last run's when it ends;
//! - `image.rs`: RUNNER_IMAGE, a run whose instance becomes the image TEST runs boot from.

mod ask;
mod conclude;
mod costs;
mod image;
mod launch;
mod learn;
mod progress;
mod results;
mod start;

#[cfg(test)]
mod ask_tests;
#[cfg(test)]
mod image_tests;
#[cfg(test)]
mod learn_tests;
#[cfg(test)]
mod progress_tests;
#[cfg(test)]
mod results_tests;

use std::sync::Arc;

use super::budget::Ledger;
use super::Timeouts;
use crate::catalog::Catalog;
use crate::ports::RunPorts;
use crate::settings::RunSettings;

use ask::Known;
pub use ask::{RunResponse, LEAST_ANSWER_TIME};
pub use conclude::CancelResponse;
pub use progress::{EventAction, InstanceEventResponse, LAUNCH_GRACE};
pub use results::describe_failures;
pub use start::{slot_abandoned, RUN_RECORD_RETENTION, SLOT_LEASE};

/// Everything TEST and BUILD need, built once per process.
#[derive(Clone)]
pub struct Runner {
    pub catalog: Arc<Catalog>,
    /// What it asks of the cloud and of time.
    pub ports: RunPorts,
    /// A start is checked against the profile's budget.
    pub ledger: Ledger,
    pub settings: RunSettings,
    pub timeouts: Timeouts,
}

impl Runner {
    /// The run side over `ports`: the one place it is put together (mains, tests, the storm).
    pub fn new(catalog: Arc<Catalog>, ports: RunPorts, settings: RunSettings) -> Runner {
        let ledger = Ledger::new(catalog.clone(), ports.spend.clone(), ports.clock.clone());
        Runner { catalog, ports, ledger, settings, timeouts: Timeouts::default() }
    }
}
