//! Alerts to the provisioner's SNS topic ([`Notices`]).

use std::sync::Arc;

use async_trait::async_trait;

use super::{aws_error, Aws};
use crate::error::Result;
use crate::ports::{NoNotices, Notices};

/// SNS limits a subject to 100 characters.
const MAX_SUBJECT: usize = 100;

pub struct SnsNotices {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsNotices {
    pub fn new(aws: &Aws, topic_arn: impl Into<String>) -> Self {
        SnsNotices { client: crate::aws_client!(aws_sdk_sns, aws), topic_arn: topic_arn.into() }
    }

    /// Alerts to `topic_arn`, or (without a topic) only to the logs.
    pub fn or_none(aws: &Aws, topic_arn: Option<String>) -> Arc<dyn Notices> {
        match topic_arn {
            Some(topic_arn) => Arc::new(SnsNotices::new(aws, topic_arn)),
            None => Arc::new(NoNotices),
        }
    }
}

#[async_trait]
impl Notices for SnsNotices {
    async fn publish(&self, subject: &str, message: &str) -> Result<()> {
        // SNS refuses control characters (a newline) in subjects.
        let subject: String = subject.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_SUBJECT).collect();
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(subject)
            .message(message)
            .send()
            .await
            .map_err(|error| aws_error("SNS", "Publish", error))?;
        Ok(())
    }
}
