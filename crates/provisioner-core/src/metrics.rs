//! Metrics as CloudWatch embedded metric format (EMF) lines on stdout: Lambda ships them to
//! CloudWatch Logs, which extracts the metrics, so no metrics client is linked. The template's
//! alarms read [`FAILURES`] in [`NAMESPACE`].

use jiff::Timestamp;
use serde_json::{json, Map, Value};

use crate::domain::RunRecord;
use crate::error::Error;

pub const NAMESPACE: &str = "SlideRuleProvisioner";
/// Invocations that ended in an error that is not the caller's (the stack, AWS, a run's
/// instance): the template alarms on it, with no dimension.
pub const FAILURES: &str = "Failures";

/// One EMF line: `dimensions` (each also a property), `metrics` as (name, unit, value).
pub fn line(
    at: Timestamp,
    dimension_sets: &[&[&str]],
    properties: &[(&str, &str)],
    metrics: &[(&str, &str, f64)],
) -> String {
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": at.as_millisecond(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": dimension_sets,
                "Metrics": metrics.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    for (key, value) in properties {
        root.insert((*key).into(), Value::from(*value));
    }
    for (name, _, value) in metrics {
        root.insert((*name).into(), json!(value));
    }
    Value::Object(root).to_string()
}

fn emit(line: String) {
    println!("{line}");
}

/// Whether an error is the provisioner's or its cloud's to fix, not the caller's.
pub fn is_failure(error: &Error) -> bool {
    !matches!(
        error,
        Error::InvalidRequest(_)
            | Error::UnknownCluster(_)
            | Error::ScheduledForDelete { .. }
            | Error::TooLateToReschedule { .. }
            | Error::Busy { .. }
            | Error::RunsCapped(_)
            | Error::ImagesMissing(_)
            | Error::TestsFailed(_)
            | Error::BuildFailed(_)
    )
}

/// One invocation: its duration and AWS calls by function and outcome (`success` or the error
/// code), and a failure count when it is one.
pub fn invocation_line(
    at: Timestamp,
    function: &str,
    outcome: Result<(), &Error>,
    seconds: f64,
    aws_calls: usize,
) -> String {
    let code = match outcome {
        Ok(()) => "success",
        Err(error) => error.code(),
    };
    let failed = outcome.err().is_some_and(is_failure);
    line(
        at,
        &[&["Function", "Outcome"], &[]],
        &[("Function", function), ("Outcome", code)],
        &[
            ("Duration", "Milliseconds", seconds * 1000.0),
            ("AwsCalls", "Count", aws_calls as f64),
            (FAILURES, "Count", if failed { 1.0 } else { 0.0 }),
        ],
    )
}

pub fn invocation(function: &str, outcome: Result<(), &Error>, seconds: f64, aws_calls: usize) {
    emit(invocation_line(Timestamp::now(), function, outcome, seconds, aws_calls));
}

/// A run's steps, one line each: duration and result by kind, step and result.
pub fn run_step_lines(at: Timestamp, record: &RunRecord) -> Vec<String> {
    record
        .steps
        .iter()
        .map(|step| {
            line(
                at,
                &[&["Kind", "Step", "Result"]],
                &[
                    ("Kind", record.kind.as_str()),
                    ("Step", &step.name),
                    ("Result", step.status.as_str()),
                    ("RunId", record.run_id.as_str()),
                ],
                &[("StepDuration", "Seconds", step.duration_seconds.unwrap_or(0.0)), ("Steps", "Count", 1.0)],
            )
        })
        .collect()
}

pub fn run_steps(record: &RunRecord) {
    run_step_lines(Timestamp::now(), record).into_iter().for_each(emit);
}

/// One attempt's boot time (launch to its first step), by instance type: a slow image or a bad
/// type shows before it fails.
pub fn boot_time_line(at: Timestamp, instance_type: &str, seconds: u32) -> String {
    line(at, &[&["InstanceType"]], &[("InstanceType", instance_type)], &[("BootTime", "Seconds", f64::from(seconds))])
}

pub fn boot_time(instance_type: &str, seconds: u32) {
    emit(boot_time_line(Timestamp::now(), instance_type, seconds));
}

/// One sweep: how many actions of each kind it took.
pub fn sweep_line(at: Timestamp, actions: &[(&str, usize)]) -> String {
    let metrics: Vec<(&str, &str, f64)> = actions.iter().map(|(name, count)| (*name, "Count", *count as f64)).collect();
    line(at, &[&[]], &[], &metrics)
}

pub fn sweep(actions: &[(&str, usize)]) {
    emit(sweep_line(Timestamp::now(), actions));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Value {
        serde_json::from_str(line).expect("one JSON object")
    }

    #[test]
    fn an_invocation_line_is_emf_with_its_dimensions_and_values() {
        let at: Timestamp = "2026-11-25T01:00:00Z".parse().unwrap();
        let error = Error::DeployFailed("x".into());
        let line = parse(&invocation_line(at, "deploy", Err(&error), 1.5, 7));
        let metadata = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(line["_aws"]["Timestamp"], at.as_millisecond());
        assert_eq!(metadata["Namespace"], NAMESPACE);
        assert_eq!(metadata["Dimensions"], json!([["Function", "Outcome"], []]));
        assert_eq!((line["Function"].as_str(), line["Outcome"].as_str()), (Some("deploy"), Some("DeployFailed")));
        assert_eq!(
            (line["Duration"].as_f64(), line["AwsCalls"].as_f64(), line[FAILURES].as_f64()),
            (Some(1500.0), Some(7.0), Some(1.0))
        );
        // Every metric named in the metadata is a number at the top level.
        for metric in metadata["Metrics"].as_array().unwrap() {
            assert!(line[metric["Name"].as_str().unwrap()].is_number(), "{metric}");
        }
        let caller = Error::invalid("bad");
        assert_eq!(parse(&invocation_line(at, "deploy", Err(&caller), 0.1, 0))[FAILURES], 0.0);
        assert_eq!(parse(&invocation_line(at, "deploy", Ok(()), 0.1, 0))["Outcome"], "success");
    }

    #[test]
    fn a_sweep_line_counts_each_kind_of_action() {
        let line = parse(&sweep_line(
            "2026-11-25T01:00:00Z".parse().unwrap(),
            &[("InstancesTerminated", 2), ("ClustersDestroyed", 0)],
        ));
        assert_eq!(line["InstancesTerminated"], 2.0);
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
    }
}
