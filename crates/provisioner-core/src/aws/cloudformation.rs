//! [`Stacks`] on CloudFormation.

use async_trait::async_trait;
use aws_sdk_cloudformation::types::{Capability, Parameter, Tag};
use aws_sdk_cloudformation::Client;

use super::{aws_error, Aws};
use crate::domain::StackStatus;
use crate::error::Result;
use crate::ports::{StackSnapshot, StackSpec, Stacks};

const SERVICE: &str = "CloudFormation";
/// Failure reasons reported per failed deploy or destroy.
const MAX_REASONS: usize = 5;

pub struct CloudFormationStacks {
    client: Client,
}

impl CloudFormationStacks {
    pub fn new(aws: &Aws) -> Self {
        CloudFormationStacks { client: crate::aws_client!(aws_sdk_cloudformation, aws) }
    }
}

/// CloudFormation answers a missing stack with a ValidationError saying it "does not exist".
/// The stack as described; `None` once deleted.
fn snapshot(stack: &aws_sdk_cloudformation::types::Stack) -> Option<StackSnapshot> {
    let status = stack.stack_status().map_or("UNKNOWN", |s| s.as_str());
    if status == "DELETE_COMPLETE" {
        return None;
    }
    let name = stack.stack_name()?.to_owned();
    Some(StackSnapshot {
        id: stack.stack_id().unwrap_or(&name).to_owned(),
        name,
        status: StackStatus::new(status),
        status_reason: stack.stack_status_reason().map(str::to_owned),
        parameters: stack
            .parameters()
            .iter()
            .filter_map(|p| Some((p.parameter_key()?.to_owned(), p.parameter_value().unwrap_or_default().to_owned())))
            .collect(),
        tags: stack
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
            .collect(),
        outputs: stack
            .outputs()
            .iter()
            .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value().unwrap_or_default().to_owned())))
            .collect(),
        created_at: stack.creation_time().and_then(|t| jiff::Timestamp::from_second(t.secs()).ok()),
    })
}

fn is_missing_stack<E: aws_sdk_cloudformation::error::ProvideErrorMetadata>(error: &E) -> bool {
    error.code() == Some("ValidationError") && error.message().is_some_and(|m| m.contains("does not exist"))
}

#[async_trait]
impl Stacks for CloudFormationStacks {
    async fn describe(&self, name: &str) -> Result<Option<StackSnapshot>> {
        let output = match self.client.describe_stacks().stack_name(name).send().await {
            Ok(output) => output,
            Err(error) if error.as_service_error().is_some_and(is_missing_stack) => return Ok(None),
            Err(error) => return Err(aws_error(SERVICE, "DescribeStacks", error)),
        };
        Ok(output.stacks().first().and_then(snapshot))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<StackSnapshot>> {
        let mut stacks = Vec::new();
        let mut token = None;
        loop {
            let output = self
                .client
                .describe_stacks()
                .set_next_token(token)
                .send()
                .await
                .map_err(|error| aws_error(SERVICE, "DescribeStacks", error))?;
            stacks.extend(
                output
                    .stacks()
                    .iter()
                    .filter(|stack| stack.stack_name().is_some_and(|name| name.starts_with(prefix)))
                    .filter_map(snapshot),
            );
            token = output.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(stacks);
            }
        }
    }

    async fn create(&self, spec: &StackSpec) -> Result<String> {
        let parameters =
            spec.parameters.iter().map(|(k, v)| Parameter::builder().parameter_key(k).parameter_value(v).build());
        let tags = spec.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build());
        let output = self
            .client
            .create_stack()
            .stack_name(&spec.name)
            .template_body(&spec.template_body)
            .set_parameters(Some(parameters.collect()))
            .set_tags(Some(tags.collect()))
            .capabilities(Capability::CapabilityIam)
            // The SDK's retries of this request then cannot create a second stack.
            .client_request_token(uuid::Uuid::new_v4().to_string())
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "CreateStack", error))?;
        Ok(output.stack_id().unwrap_or(&spec.name).to_owned())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.client
            .delete_stack()
            .stack_name(name)
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "DeleteStack", error))?;
        Ok(())
    }

    async fn failure_reasons(&self, name: &str) -> Result<Vec<String>> {
        let output = match self.client.describe_stack_events().stack_name(name).send().await {
            Ok(output) => output,
            Err(error) if error.as_service_error().is_some_and(is_missing_stack) => return Ok(Vec::new()),
            Err(error) => return Err(aws_error(SERVICE, "DescribeStackEvents", error)),
        };
        Ok(output
            .stack_events()
            .iter()
            .filter(|event| event.resource_status().is_some_and(|s| s.as_str().ends_with("_FAILED")))
            .filter_map(|event| {
                let reason = event.resource_status_reason()?;
                // Cancellations are the echo of another resource's failure.
                (!reason.contains("cancelled"))
                    .then(|| format!("{}: {}", event.logical_resource_id().unwrap_or("?"), reason))
            })
            .take(MAX_REASONS)
            .collect())
    }
}
