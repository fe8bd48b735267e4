//! Requests and times of the tests, from literals.

use jiff::Timestamp;

use crate::domain::{ClusterName, DeployRequest, GitRef, RunRequest};

/// When the tests' worlds start.
pub const NOW: &str = "2026-11-23T12:00:00Z";

pub fn cluster(name: &str) -> ClusterName {
    ClusterName::parse(name).unwrap()
}

/// A deploy of the profile's default version.
pub fn deploy(name: &str) -> DeployRequest {
    DeployRequest { cluster: cluster(name), version: None, requested_by: None }
}

/// A run start that answers at once.
pub fn start(name: &str, version: &str) -> RunRequest {
    RunRequest::Start {
        cluster: cluster(name),
        version: GitRef::parse(version).unwrap(),
        wait_seconds: Some(0),
        hold_minutes: 0,
        requested_by: None,
    }
}

pub fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}
