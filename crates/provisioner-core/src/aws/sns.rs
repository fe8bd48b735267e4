//! Alerts to the provisioner's SNS topic ([`Notices`]).

use std::sync::Arc;

use async_trait::async_trait;

use super::{aws_error, Aws};
use crate::error::Result;
use crate::ports::{NoNotices, Notices};

/// SNS API reference, Publish: "Subjects must be UTF-8 text with no line breaks or control
/// characters, and less than 100 characters long."
const MAX_SUBJECT_CHARACTERS: usize = 99;
/// The same page: a message is at most 256 KB.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
const CUT_NOTE: &str = "\n[cut at SNS's 256 KB; the function's log has the rest]";

/// `subject` as SNS takes it: control characters (a newline) as spaces, at most 99 characters.
fn fit_subject(subject: &str) -> String {
    subject.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_SUBJECT_CHARACTERS).collect()
}

/// `message` as SNS takes it: cut, at a character boundary, to fit 256 KB with a note saying so.
fn fit_message(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE_BYTES - CUT_NOTE.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT_NOTE}", &message[..end])
}

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
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(fit_subject(subject))
            .message(fit_message(message))
            .send()
            .await
            .map_err(|error| aws_error("SNS", "Publish", error))?;
        Ok(())
    }

    async fn publish_for(&self, subject: &str, message: &str, requested_by: &str) -> Result<()> {
        let attribute = aws_sdk_sns::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(requested_by)
            .build()
            .map_err(|error| crate::Error::invalid(format!("the alert's requested_by attribute: {error}")))?;
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(fit_subject(subject))
            .message(fit_message(message))
            .message_attributes(REQUESTED_BY_ATTRIBUTE, attribute)
            .send()
            .await
            .map_err(|error| aws_error("SNS", "Publish", error))?;
        Ok(())
    }
}

/// The message attribute a person's email subscription filters on (README, "Warnings").
pub const REQUESTED_BY_ATTRIBUTE: &str = "requested_by";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_messages_are_cut_to_what_sns_takes() {
        let subject = fit_subject(&format!("two\nlines {}", "é".repeat(200)));
        assert_eq!((subject.chars().count(), subject.starts_with("two lines")), (99, true));
        assert_eq!(fit_message("short"), "short");
        let message = fit_message(&"é".repeat(MAX_MESSAGE_BYTES));
        assert!(message.len() <= MAX_MESSAGE_BYTES && message.ends_with(CUT_NOTE), "{}", message.len());
    }
}
