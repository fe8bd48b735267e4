//! Every CloudFormation stack status, sorted into what the provisioner does about it.

use std::fmt;

/// What a stack's status means for deploy and destroy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackPhase {
    /// No stack: never created, or deleted.
    Absent,
    /// Stable with its resources in place: the cluster is running.
    Running,
    /// Creating, updating or rolling back: wait for it to settle.
    InProgress,
    /// Being deleted: wait for it to go.
    Deleting,
    /// Failed without leaving resources behind: safe to delete and create again.
    FailedReplaceable,
    /// Failed with resources possibly left behind: a person should look (deploy refuses;
    /// destroy retries the delete).
    FailedNeedsAttention,
}

/// A CloudFormation stack status, as the service spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackStatus(String);

impl StackStatus {
    pub fn new(raw: impl Into<String>) -> Self {
        StackStatus(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn phase(&self) -> StackPhase {
        match self.0.as_str() {
            "DELETE_COMPLETE" => StackPhase::Absent,
            "CREATE_COMPLETE"
            | "UPDATE_COMPLETE"
            | "UPDATE_ROLLBACK_COMPLETE"
            | "IMPORT_COMPLETE"
            | "IMPORT_ROLLBACK_COMPLETE" => StackPhase::Running,
            "CREATE_IN_PROGRESS"
            | "ROLLBACK_IN_PROGRESS"
            | "UPDATE_IN_PROGRESS"
            | "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS"
            | "UPDATE_ROLLBACK_IN_PROGRESS"
            | "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS"
            | "IMPORT_IN_PROGRESS"
            | "IMPORT_ROLLBACK_IN_PROGRESS" => StackPhase::InProgress,
            "DELETE_IN_PROGRESS" => StackPhase::Deleting,
            // A failed create leaves nothing; a review stack never created anything.
            "ROLLBACK_COMPLETE" | "REVIEW_IN_PROGRESS" => StackPhase::FailedReplaceable,
            // ROLLBACK_FAILED, DELETE_FAILED, UPDATE_ROLLBACK_FAILED, IMPORT_ROLLBACK_FAILED,
            // UPDATE_FAILED and any status CloudFormation adds later.
            _ => StackPhase::FailedNeedsAttention,
        }
    }
}

/// Every status in the CloudFormation API reference.
pub const KNOWN_STATUSES: &[&str] = &[
    "CREATE_IN_PROGRESS",
    "CREATE_FAILED",
    "CREATE_COMPLETE",
    "ROLLBACK_IN_PROGRESS",
    "ROLLBACK_FAILED",
    "ROLLBACK_COMPLETE",
    "DELETE_IN_PROGRESS",
    "DELETE_FAILED",
    "DELETE_COMPLETE",
    "UPDATE_IN_PROGRESS",
    "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
    "UPDATE_COMPLETE",
    "UPDATE_FAILED",
    "UPDATE_ROLLBACK_IN_PROGRESS",
    "UPDATE_ROLLBACK_FAILED",
    "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
    "UPDATE_ROLLBACK_COMPLETE",
    "REVIEW_IN_PROGRESS",
    "IMPORT_IN_PROGRESS",
    "IMPORT_COMPLETE",
    "IMPORT_ROLLBACK_IN_PROGRESS",
    "IMPORT_ROLLBACK_FAILED",
    "IMPORT_ROLLBACK_COMPLETE",
];

impl fmt::Display for StackStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHASES: &[(&str, StackPhase)] = &[
        ("CREATE_IN_PROGRESS", StackPhase::InProgress),
        ("CREATE_FAILED", StackPhase::FailedNeedsAttention),
        ("CREATE_COMPLETE", StackPhase::Running),
        ("ROLLBACK_IN_PROGRESS", StackPhase::InProgress),
        ("ROLLBACK_FAILED", StackPhase::FailedNeedsAttention),
        ("ROLLBACK_COMPLETE", StackPhase::FailedReplaceable),
        ("DELETE_IN_PROGRESS", StackPhase::Deleting),
        ("DELETE_FAILED", StackPhase::FailedNeedsAttention),
        ("DELETE_COMPLETE", StackPhase::Absent),
        ("UPDATE_IN_PROGRESS", StackPhase::InProgress),
        ("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", StackPhase::InProgress),
        ("UPDATE_COMPLETE", StackPhase::Running),
        ("UPDATE_FAILED", StackPhase::FailedNeedsAttention),
        ("UPDATE_ROLLBACK_IN_PROGRESS", StackPhase::InProgress),
        ("UPDATE_ROLLBACK_FAILED", StackPhase::FailedNeedsAttention),
        ("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", StackPhase::InProgress),
        ("UPDATE_ROLLBACK_COMPLETE", StackPhase::Running),
        ("REVIEW_IN_PROGRESS", StackPhase::FailedReplaceable),
        ("IMPORT_IN_PROGRESS", StackPhase::InProgress),
        ("IMPORT_COMPLETE", StackPhase::Running),
        ("IMPORT_ROLLBACK_IN_PROGRESS", StackPhase::InProgress),
        ("IMPORT_ROLLBACK_FAILED", StackPhase::FailedNeedsAttention),
        ("IMPORT_ROLLBACK_COMPLETE", StackPhase::Running),
    ];

    #[test]
    fn every_documented_status_has_its_phase() {
        let listed: Vec<&str> = PHASES.iter().map(|(status, _)| *status).collect();
        assert_eq!(listed, KNOWN_STATUSES);
        for (status, phase) in PHASES {
            assert_eq!(StackStatus::new(*status).phase(), *phase, "{status}");
        }
    }

    #[test]
    fn an_unknown_status_needs_attention_rather_than_a_wait() {
        assert_eq!(StackStatus::new("SOMETHING_NEW").phase(), StackPhase::FailedNeedsAttention);
    }
}
