//! [`ClusterLogs`] over CloudFormation (the stack's resources), EC2 (its groups' instances) and
//! SSM Run Command (`AWS-RunShellScript`).

use async_trait::async_trait;
use aws_sdk_ec2::types::Filter;
use aws_sdk_ssm::types::CommandInvocationStatus;

use super::{aws_error, Aws};
use crate::error::Result;
use crate::ports::{ClusterLogs, CommandOutcome};

pub struct RunCommandLogs {
    cloudformation: aws_sdk_cloudformation::Client,
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
}

impl RunCommandLogs {
    pub fn new(aws: &Aws) -> Self {
        RunCommandLogs {
            cloudformation: crate::aws_client!(aws_sdk_cloudformation, aws),
            ec2: crate::aws_client!(aws_sdk_ec2, aws),
            ssm: crate::aws_client!(aws_sdk_ssm, aws),
        }
    }
}

#[async_trait]
impl ClusterLogs for RunCommandLogs {
    async fn instances(&self, stack_name: &str) -> Result<Vec<String>> {
        let resources = match self.cloudformation.describe_stack_resources().stack_name(stack_name).send().await {
            Ok(output) => output,
            Err(error)
                if error.as_service_error().is_some_and(|e| {
                    use aws_sdk_cloudformation::error::ProvideErrorMetadata;
                    e.message().is_some_and(|m| m.contains("does not exist"))
                }) =>
            {
                return Ok(Vec::new())
            }
            Err(error) => return Err(aws_error("CloudFormation", "DescribeStackResources", error)),
        };
        let of_type = |kind: &str| -> Vec<String> {
            resources
                .stack_resources()
                .iter()
                .filter(|r| r.resource_type() == Some(kind))
                .filter_map(|r| r.physical_resource_id().map(str::to_owned))
                .collect()
        };
        let mut instances = of_type("AWS::EC2::Instance");
        let groups = of_type("AWS::AutoScaling::AutoScalingGroup");
        if !groups.is_empty() {
            let output = self
                .ec2
                .describe_instances()
                .filters(Filter::builder().name("tag:aws:autoscaling:groupName").set_values(Some(groups)).build())
                .filters(Filter::builder().name("instance-state-name").values("running").build())
                .send()
                .await
                .map_err(|error| aws_error("EC2", "DescribeInstances", error))?;
            instances.extend(
                output
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .filter_map(|i| i.instance_id().map(str::to_owned)),
            );
        }
        instances.sort();
        instances.dedup();
        Ok(instances)
    }

    async fn copy_logs(&self, instance_id: &str, destination: &str) -> Result<String> {
        let output = self
            .ssm
            .send_command()
            .instance_ids(instance_id)
            .document_name("AWS-RunShellScript")
            .comment("SlideRule provisioner: keep the containers' logs before a destroy")
            .parameters("commands", crate::domain::cluster_logs::copy_commands(destination))
            .parameters("executionTimeout", vec![crate::domain::cluster_logs::LOGS_WAIT_SECONDS.to_string()])
            .timeout_seconds(30)
            .send()
            .await
            .map_err(|error| aws_error("SSM", "SendCommand", error))?;
        Ok(output.command().and_then(|c| c.command_id()).unwrap_or_default().to_owned())
    }

    async fn outcome(&self, command_id: &str, instance_id: &str) -> Result<CommandOutcome> {
        let output =
            match self.ssm.get_command_invocation().command_id(command_id).instance_id(instance_id).send().await {
                Ok(output) => output,
                // Not registered yet: still on its way.
                Err(error) if error.as_service_error().is_some_and(|e| e.is_invocation_does_not_exist()) => {
                    return Ok(CommandOutcome::Running)
                }
                Err(error) => return Err(aws_error("SSM", "GetCommandInvocation", error)),
            };
        Ok(match output.status() {
            Some(CommandInvocationStatus::Success) => CommandOutcome::Succeeded,
            Some(
                CommandInvocationStatus::Pending
                | CommandInvocationStatus::InProgress
                | CommandInvocationStatus::Delayed,
            )
            | None => CommandOutcome::Running,
            Some(other) => {
                CommandOutcome::Failed(output.status_details().map_or_else(|| other.as_str().to_owned(), str::to_owned))
            }
        })
    }
}
