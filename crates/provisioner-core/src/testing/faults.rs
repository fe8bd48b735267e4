//! Faults the fakes inject into calls (the fault storm's and the tests'), and what a call is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{AwsErrorKind, AwsFailure, Error, Result};

/// How a call to AWS goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Throttled after the SDK's retries: nothing happened.
    Throttled,
    /// A 5xx answer: nothing happened, but the caller cannot know that.
    ServerError,
    /// The connection was reset before the request arrived: nothing happened.
    Reset,
    /// The call took effect and its answer was lost.
    LostAnswer,
    /// A conditional write took effect, its answer was lost, and the SDK's retry of it failed
    /// its condition (the write's own effect): answered as a conflict. Drawn at random only for
    /// writes whose own effect fails their condition ([`Faults::draw_self_falsifying`]).
    RetryMeetsOwnWrite,
}

impl Fault {
    const ALL: [Fault; 4] = [Fault::Throttled, Fault::ServerError, Fault::Reset, Fault::LostAnswer];

    fn error(self, operation: &'static str) -> Error {
        match self {
            Fault::Throttled => fake_failure(operation, "ThrottlingException", AwsErrorKind::Throttled),
            Fault::ServerError => fake_failure(operation, "InternalFailure", AwsErrorKind::Indeterminate),
            Fault::Reset => fake_failure(operation, "ConnectionFailure", AwsErrorKind::Indeterminate),
            Fault::LostAnswer => fake_failure(operation, "Timeout", AwsErrorKind::Indeterminate),
            Fault::RetryMeetsOwnWrite => {
                fake_failure(operation, "ConditionalCheckFailedException", AwsErrorKind::Conflict)
            }
        }
    }
}

/// What the SDK's standard retries spend before they give up (three tries, backing off up to
/// 1 s and 2 s), or before a lost answer times out.
const SDK_GIVES_UP_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Default)]
struct FaultState {
    /// Faults at a rate: the generator (seeded, so a run can be replayed) and the rate.
    random: Option<(fastrand::Rng, f64)>,
    /// The next calls of an operation fail with a fault, once per entry.
    scripted: Vec<(&'static str, Fault)>,
    injected: usize,
    /// Of which, retries that met their own write.
    own_writes_met: usize,
    /// When no other faults are drawn: the rate at which conditional writes meet their own.
    own_writes: Option<(fastrand::Rng, f64)>,
    /// Every operation drawn for, in order: what was asked of the fakes.
    drawn: Vec<&'static str>,
    /// Faults injected into each task, so a storm can tell which operations they hit.
    by_task: HashMap<tokio::task::Id, usize>,
}

/// Faults the fakes inject into calls, by script or at a rate. One is shared by the fakes of a
/// world; by default it injects nothing.
#[derive(Default)]
pub struct Faults {
    state: Mutex<FaultState>,
}

/// The rest of a call that a fault may still fail after it took effect.
#[must_use]
pub struct Effect(Option<Error>);

impl Effect {
    /// The call's answer: `value`, or the lost-answer error.
    pub fn answer<T>(self, value: T) -> Result<T> {
        match self.0 {
            Some(error) => Err(error),
            None => Ok(value),
        }
    }
}

impl Faults {
    pub fn none() -> Arc<Self> {
        Arc::new(Faults::default())
    }

    /// From now on, each call fails with probability `rate`, with a fault drawn at random.
    pub fn at_rate(&self, seed: u64, rate: f64) {
        self.state.lock().unwrap().random = Some((fastrand::Rng::with_seed(seed), rate));
    }

    /// While calm: each conditional write whose own effect fails its condition meets its own
    /// write on its retry with probability `rate`.
    pub fn meet_own_writes(&self, seed: u64, rate: f64) {
        self.state.lock().unwrap().own_writes = Some((fastrand::Rng::with_seed(seed), rate));
    }

    /// Stops the faults at a rate.
    pub fn calm(&self) {
        self.state.lock().unwrap().random = None;
    }

    /// The next `times` calls of `operation` (a fake's operation name) fail with `fault`.
    pub fn script(&self, operation: &'static str, fault: Fault, times: usize) {
        self.state.lock().unwrap().scripted.extend(std::iter::repeat_n((operation, fault), times));
    }

    pub fn injected(&self) -> usize {
        self.state.lock().unwrap().injected
    }

    /// Injected retries that met their own write.
    pub fn own_writes_met(&self) -> usize {
        self.state.lock().unwrap().own_writes_met
    }

    /// Faults injected into the task `task` so far.
    pub fn injected_into(&self, task: tokio::task::Id) -> usize {
        self.state.lock().unwrap().by_task.get(&task).copied().unwrap_or(0)
    }

    /// Decides the fate of one call of `operation`: `Err` when it fails before taking effect;
    /// otherwise what to answer once it has. A fault takes the time the SDK spends on it.
    pub async fn draw(&self, operation: &'static str) -> Result<Effect> {
        self.draw_from(operation, &Fault::ALL).await
    }

    /// As [`Faults::draw`], for a conditional write whose own effect fails its condition: its
    /// SDK retry after a lost answer may meet its own write.
    pub async fn draw_self_falsifying(&self, operation: &'static str) -> Result<Effect> {
        // Half its faults are the one only these writes can meet.
        let faults = [Fault::ALL, [Fault::RetryMeetsOwnWrite; 4]].concat();
        self.draw_from(operation, &faults).await
    }

    async fn draw_from(&self, operation: &'static str, faults: &[Fault]) -> Result<Effect> {
        let Some(fault) = self.decide(operation, faults) else { return Ok(Effect(None)) };
        tokio::time::sleep(SDK_GIVES_UP_AFTER).await;
        match fault {
            Fault::LostAnswer | Fault::RetryMeetsOwnWrite => Ok(Effect(Some(fault.error(operation)))),
            before => Err(before.error(operation)),
        }
    }

    fn decide(&self, operation: &'static str, faults: &[Fault]) -> Option<Fault> {
        let mut state = self.state.lock().unwrap();
        state.drawn.push(operation);
        let fault = match state.scripted.iter().position(|(op, _)| *op == operation) {
            Some(index) => Some(state.scripted.remove(index).1),
            None if state.random.is_some() => state
                .random
                .as_mut()
                .and_then(|(rng, rate)| (rng.f64() < *rate).then(|| faults[rng.usize(..faults.len())])),
            None => {
                let meets = faults.contains(&Fault::RetryMeetsOwnWrite);
                state
                    .own_writes
                    .as_mut()
                    .and_then(|(rng, rate)| (meets && rng.f64() < *rate).then_some(Fault::RetryMeetsOwnWrite))
            }
        }?;
        state.injected += 1;
        state.own_writes_met += usize::from(fault == Fault::RetryMeetsOwnWrite);
        if let Some(task) = tokio::task::try_id() {
            *state.by_task.entry(task).or_default() += 1;
        }
        Some(fault)
    }
}

impl Faults {
    /// Every call made to the fakes sharing these faults since the last take, oldest first.
    pub fn take_calls(&self) -> Vec<&'static str> {
        std::mem::take(&mut self.state.lock().unwrap().drawn)
    }
}

/// A call made to a fake, for assertions on what was asked of the cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    DescribeStack(String),
    /// Stacks listed by prefix.
    ListStacks(String),
    CreateStack(String),
    DeleteStack(String),
    StackEvents(String),
    ListSchedules(String),
    CreateSchedule(String),
    DeleteSchedule(String),
    /// Which repositories were asked for which tag.
    MissingImages(Vec<String>, String),
}

/// An AWS error of `kind` with `code`, as an adapter would return it.
pub(super) fn fake_failure(operation: &'static str, code: &str, kind: AwsErrorKind) -> Error {
    Error::Aws(AwsFailure { service: "Fake", operation, code: code.into(), message: String::new(), kind })
}
