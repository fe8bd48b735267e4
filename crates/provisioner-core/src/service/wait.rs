//! The one wait loop for stacks, shared by deploy and destroy.

use jiff::Timestamp;

use super::Provisioner;
use crate::domain::StackPhase;
use crate::error::Result;
use crate::ports::StackSnapshot;

/// How a wait ended.
#[derive(Debug)]
pub(super) struct Waited {
    /// The stack as last described (`None`: absent).
    pub last: Option<StackSnapshot>,
    /// Whether the stack reached what the caller waited for before the limit.
    pub done: bool,
}

/// What a wait is for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Until {
    /// No longer creating, updating, rolling back or deleting.
    Settled,
    /// Deleted, or stopped deleting (DELETE_FAILED).
    DeleteEnded,
}

impl Until {
    fn reached(self, stack: &Option<StackSnapshot>) -> bool {
        let phase = phase_of(stack);
        match self {
            Until::Settled => !matches!(phase, StackPhase::InProgress | StackPhase::Deleting),
            Until::DeleteEnded => {
                phase == StackPhase::Absent || stack.as_ref().is_some_and(|s| s.status.as_str() == "DELETE_FAILED")
            }
        }
    }
}

pub(super) fn phase_of(stack: &Option<StackSnapshot>) -> StackPhase {
    stack.as_ref().map_or(StackPhase::Absent, |s| s.status.phase())
}

fn status_of(stack: &Option<StackSnapshot>) -> &str {
    stack.as_ref().map_or("ABSENT", |s| s.status.as_str())
}

/// Describes `stack_name` every poll interval until `until` holds or `limit` passes. Logs each
/// status change once. `seen` is the status the caller last saw, so a change is not logged
/// twice across waits.
pub(super) async fn wait_for_stack(
    provisioner: &Provisioner,
    stack_name: &str,
    until: Until,
    limit: Timestamp,
    seen: &mut Option<String>,
) -> Result<Waited> {
    let clock = &provisioner.ports.clock;
    loop {
        let stack = provisioner.ports.stacks.describe(stack_name).await?;
        let status = status_of(&stack);
        if seen.as_deref() != Some(status) {
            tracing::info!(
                stack = stack_name,
                from = seen.as_deref().unwrap_or("UNKNOWN"),
                to = status,
                "stack status changed"
            );
            *seen = Some(status.to_owned());
        }
        if until.reached(&stack) {
            return Ok(Waited { last: stack, done: true });
        }
        let now = clock.now();
        if now >= limit {
            return Ok(Waited { last: stack, done: false });
        }
        let left = limit.duration_since(now).unsigned_abs();
        clock.sleep(provisioner.timeouts.stack_poll.min(left)).await;
    }
}
