//! What `instance_event` receives: an EC2 event as EventBridge delivers it, whole envelope.

use serde::Deserialize;

use crate::domain::names::shown;
use crate::error::Error;

pub const SPOT_WARNING: &str = "EC2 Spot Instance Interruption Warning";
pub const STATE_CHANGE: &str = "EC2 Instance State-change Notification";

/// What happened to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceChange {
    /// EC2 will reclaim the spot instance in two minutes (`instance-action`: terminate, stop, hibernate).
    SpotInterruption { action: String },
    /// The instance entered `state` (EC2's name: pending, running, shutting-down, ...).
    State(String),
}

/// One EC2 event about one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceEvent {
    /// EventBridge's id of the event: the same on a redelivery.
    pub id: String,
    pub instance_id: String,
    pub change: InstanceChange,
}

/// The envelope's fields; EventBridge may add more, so others are not refused.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: String,
    #[serde(rename = "detail-type")]
    detail_type: String,
    source: String,
    detail: Detail,
}

#[derive(Deserialize)]
struct Detail {
    #[serde(rename = "instance-id")]
    instance_id: Option<String>,
    #[serde(rename = "instance-action")]
    instance_action: Option<String>,
    state: Option<String>,
}

impl InstanceEvent {
    pub fn parse(event: serde_json::Value) -> Result<InstanceEvent, Error> {
        let envelope: Envelope = serde_json::from_value(event).map_err(|error| {
            Error::invalid(format!(
                "the event is not an EventBridge EC2 event ({error}); instance_event takes what the template's rule \
                 delivers"
            ))
        })?;
        if envelope.source != "aws.ec2" {
            return Err(Error::invalid(format!("the event's source is {}, not aws.ec2", shown(&envelope.source))));
        }
        let valid_id = |id: &String| {
            id.starts_with("i-") && id.len() <= 32 && id[2..].bytes().all(|b| b.is_ascii_hexdigit()) && id.len() > 2
        };
        let Some(instance_id) = envelope.detail.instance_id.filter(valid_id) else {
            return Err(Error::invalid("the event names no instance id (detail.instance-id, such as i-0abc…)"));
        };
        let change = match envelope.detail_type.as_str() {
            SPOT_WARNING => InstanceChange::SpotInterruption {
                action: envelope.detail.instance_action.unwrap_or_else(|| "terminate".into()),
            },
            STATE_CHANGE => match envelope.detail.state {
                Some(state) => InstanceChange::State(state),
                None => return Err(Error::invalid("a state-change event without detail.state")),
            },
            other => {
                return Err(Error::invalid(format!(
                    "the event type {} is not \"{SPOT_WARNING}\" or \"{STATE_CHANGE}\"",
                    shown(other)
                )))
            }
        };
        Ok(InstanceEvent { id: envelope.id, instance_id, change })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn envelope(detail_type: &str, detail: serde_json::Value) -> serde_json::Value {
        json!({
            "version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602", "detail-type": detail_type,
            "source": "aws.ec2", "account": "123456789012", "time": "2026-11-23T12:00:00Z",
            "region": "us-west-2", "resources": ["arn:aws:ec2:us-west-2:123456789012:instance/i-0abc1234"],
            "detail": detail
        })
    }

    #[test]
    fn both_kinds_of_ec2_event_are_read_from_their_envelope() {
        let warning = envelope(SPOT_WARNING, json!({"instance-id": "i-0abc1234", "instance-action": "terminate"}));
        let read = InstanceEvent::parse(warning).unwrap();
        assert_eq!(read.instance_id, "i-0abc1234");
        assert_eq!(read.id, "7bf73129-1428-4cd3-a780-95db273d1602");
        assert_eq!(read.change, InstanceChange::SpotInterruption { action: "terminate".into() });
        let stopped = envelope(STATE_CHANGE, json!({"instance-id": "i-0abc1234", "state": "terminated"}));
        assert_eq!(InstanceEvent::parse(stopped).unwrap().change, InstanceChange::State("terminated".into()));
    }

    #[test]
    fn other_sources_types_and_events_without_an_instance_are_invalid() {
        let mut other_source = envelope(STATE_CHANGE, json!({"instance-id": "i-0abc1234", "state": "running"}));
        other_source["source"] = json!("aws.s3");
        let bad = [
            other_source,
            envelope("EC2 AMI State Change", json!({"instance-id": "i-0abc1234"})),
            envelope(SPOT_WARNING, json!({"instance-action": "terminate"})),
            envelope(SPOT_WARNING, json!({"instance-id": "i-$(id)"})),
            envelope(STATE_CHANGE, json!({"instance-id": "i-0abc1234"})),
            json!({"cluster": "ci-1"}),
            json!([]),
        ];
        for event in bad {
            assert_eq!(InstanceEvent::parse(event.clone()).unwrap_err().code(), "InvalidRequest", "{event}");
        }
    }
}
