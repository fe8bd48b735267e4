//! DRY_RUN: what a call would do, in order, without doing it. A dry run makes only reads, takes
//! no lock and writes nothing; it answers the same errors the call would. Each planned entry
//! names the AWS write the call would make and its main parameters.

use serde::Serialize;
use serde_json::{Map, Value};

/// One AWS write a call would make.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedWrite {
    /// `Service.Operation`, as the SDK names it (`CloudFormation.CreateStack`).
    pub write: String,
    /// What it would be asked, by name.
    #[serde(flatten)]
    pub parameters: Map<String, Value>,
}

impl PlannedWrite {
    pub fn new(write: &str, parameters: Value) -> PlannedWrite {
        let parameters = match parameters {
            Value::Object(map) => map,
            other => Map::from_iter([("value".to_owned(), other)]),
        };
        PlannedWrite { write: write.to_owned(), parameters }
    }
}

/// The answer of a dry run: `{"status": "plan", "plan": [...]}`, and which branch of the
/// function's decision table the call would take.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub status: &'static str,
    pub function: &'static str,
    pub branch: String,
    pub plan: Vec<PlannedWrite>,
}

impl Plan {
    pub fn new(function: &'static str, branch: impl Into<String>, plan: Vec<PlannedWrite>) -> Plan {
        Plan { status: "plan", function, branch: branch.into(), plan }
    }
}

/// A call's answer: what it did, or (for a dry run) what it would do.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Answer<T> {
    Done(T),
    Plan(Plan),
}

/// Whether `operation` (`Service.Operation`) changes anything: what a dry run must never call.
pub fn is_write(operation: &str) -> bool {
    let name = operation.rsplit('.').next().unwrap_or(operation);
    !["Describe", "Get", "List", "Scan", "Query", "BatchGet"].iter().any(|read| name.starts_with(read))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_told_from_writes_by_their_operation_name() {
        for read in ["CloudFormation.DescribeStacks", "Scheduler.ListSchedules", "DynamoDB.GetItem", "SSM.GetParameter"]
        {
            assert!(!is_write(read), "{read}");
        }
        for write in ["CloudFormation.CreateStack", "DynamoDB.UpdateItem", "EC2.RunInstances", "SNS.Publish"] {
            assert!(is_write(write), "{write}");
        }
        let plan = Plan::new(
            "destroy",
            "delete",
            vec![PlannedWrite::new("CloudFormation.DeleteStack", serde_json::json!({"stack": "s"}))],
        );
        let json = serde_json::to_value(Answer::<()>::Plan(plan)).unwrap();
        assert_eq!(json["status"], "plan");
        assert_eq!(json["plan"][0], serde_json::json!({"write": "CloudFormation.DeleteStack", "stack": "s"}));
    }
}
