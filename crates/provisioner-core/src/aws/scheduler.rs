//! [`Schedules`] on EventBridge Scheduler: one-time `at()` schedules in the provisioner's group
//! that invoke the destroy function through the scheduler role and delete themselves afterwards.

use async_trait::async_trait;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode, RetryPolicy, Target,
};
use aws_sdk_scheduler::Client;
use jiff::civil::DateTime;
use jiff::Timestamp;

use super::{aws_error, Aws};
use crate::domain::RequestedBy;
use crate::error::{AwsErrorKind, AwsFailure, Error, Result};
use crate::ports::{ScheduleEntry, Schedules};
use crate::settings::ScheduleTarget;

/// What a destroy schedule says of itself, and who scheduled it (read back by [`scheduled_by`]).
fn description(at: Timestamp, requested_by: Option<&RequestedBy>) -> String {
    let by = requested_by.map(|who| format!("{SCHEDULED_BY}{}", who.as_str())).unwrap_or_default();
    format!("Destroys a SlideRule cluster at {at}; created by the SlideRule Provisioner{by}")
}

const SCHEDULED_BY: &str = "; scheduled by ";

fn scheduled_by(description: &str) -> Option<&str> {
    description.rsplit_once(SCHEDULED_BY).map(|(_, who)| who)
}

const SERVICE: &str = "Scheduler";
/// A fired schedule whose destroy fails (Busy, throttled) is tried again for up to a day.
const RETRY_ATTEMPTS: i32 = 20;
const RETRY_MAX_EVENT_AGE_SECONDS: i32 = 24 * 60 * 60;

pub struct EventBridgeSchedules {
    client: Client,
    target: ScheduleTarget,
}

impl EventBridgeSchedules {
    pub fn new(aws: &Aws, target: ScheduleTarget) -> Self {
        EventBridgeSchedules { client: crate::aws_client!(aws_sdk_scheduler, aws), target }
    }
}

/// The time of an `at(yyyy-mm-ddThh:mm:ss)` expression in `zone` (UTC when absent).
pub fn parse_at_expression(expression: &str, zone: Option<&str>) -> Option<Timestamp> {
    let civil: DateTime = expression.strip_prefix("at(")?.strip_suffix(')')?.parse().ok()?;
    match zone {
        None | Some("UTC") | Some("Etc/UTC") | Some("") => jiff::tz::TimeZone::UTC.to_timestamp(civil).ok(),
        Some(name) => civil.in_tz(name).ok().map(|z| z.timestamp()),
    }
}

#[async_trait]
impl Schedules for EventBridgeSchedules {
    async fn list(&self, prefix: &str) -> Result<Vec<ScheduleEntry>> {
        let mut names = Vec::new();
        let mut pages =
            self.client.list_schedules().group_name(&self.target.group).name_prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| aws_error(SERVICE, "ListSchedules", error))?;
            names.extend(page.schedules().iter().filter_map(|s| s.name().map(str::to_owned)));
        }
        let mut entries = Vec::new();
        for name in names.into_iter().filter(|n| n.starts_with(prefix)) {
            let schedule = match self.client.get_schedule().group_name(&self.target.group).name(&name).send().await {
                Ok(schedule) => schedule,
                // Fired and deleted since it was listed.
                Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => continue,
                Err(error) => return Err(aws_error(SERVICE, "GetSchedule", error)),
            };
            let expression = schedule.schedule_expression().unwrap_or_default();
            let at = parse_at_expression(expression, schedule.schedule_expression_timezone()).ok_or_else(|| {
                Error::Aws(AwsFailure {
                    service: SERVICE,
                    operation: "GetSchedule",
                    code: "UnexpectedExpression".into(),
                    message: format!("schedule {name} has expression '{expression}', not a one-time at()"),
                    kind: AwsErrorKind::Other,
                })
            })?;
            let requested_by = schedule.description().and_then(scheduled_by).map(str::to_owned);
            entries.push(ScheduleEntry { name, at, requested_by });
        }
        entries.sort_by_key(|e| e.at);
        Ok(entries)
    }

    async fn create(&self, name: &str, at: Timestamp, input: &str, requested_by: Option<&RequestedBy>) -> Result<()> {
        let build = |what: &str, error: aws_sdk_scheduler::error::BuildError| {
            Error::Aws(AwsFailure {
                service: SERVICE,
                operation: "CreateSchedule",
                code: "ConstructionFailure".into(),
                message: format!("{what}: {error}"),
                kind: AwsErrorKind::Other,
            })
        };
        let mut target = Target::builder()
            .arn(&self.target.destroy_function_arn)
            .role_arn(&self.target.role_arn)
            .input(input)
            .retry_policy(
                RetryPolicy::builder()
                    .maximum_retry_attempts(RETRY_ATTEMPTS)
                    .maximum_event_age_in_seconds(RETRY_MAX_EVENT_AGE_SECONDS)
                    .build(),
            );
        if let Some(queue) = &self.target.dead_letter_arn {
            target = target.dead_letter_config(DeadLetterConfig::builder().arn(queue).build());
        }
        self.client
            .create_schedule()
            .name(name)
            .group_name(&self.target.group)
            .schedule_expression(format!("at({})", at.strftime("%Y-%m-%dT%H:%M:%S")))
            .schedule_expression_timezone("UTC")
            .flexible_time_window(
                FlexibleTimeWindow::builder()
                    .mode(FlexibleTimeWindowMode::Off)
                    .build()
                    .map_err(|e| build("window", e))?,
            )
            .target(target.build().map_err(|e| build("target", e))?)
            .action_after_completion(ActionAfterCompletion::Delete)
            .description(description(at, requested_by))
            .client_token(uuid::Uuid::new_v4().to_string())
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "CreateSchedule", error))?;
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        match self.client.delete_schedule().group_name(&self.target.group).name(name).send().await {
            Ok(_) => Ok(()),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => Ok(()),
            Err(error) => Err(aws_error(SERVICE, "DeleteSchedule", error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_expressions_parse_in_their_zone() {
        let utc: Timestamp = "2026-11-23T15:00:00Z".parse().unwrap();
        assert_eq!(parse_at_expression("at(2026-11-23T15:00:00)", Some("UTC")), Some(utc));
        assert_eq!(parse_at_expression("at(2026-11-23T15:00:00)", None), Some(utc));
        assert_eq!(parse_at_expression("rate(5 minutes)", None), None);
        assert_eq!(parse_at_expression("at(tomorrow)", None), None);
    }
}
