//! The events each function accepts. Unknown fields are rejected, and every field is parsed into
//! a validated type before any AWS call.

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::domain::names::RequestedBy;
use crate::domain::names::{ClusterName, GitRef};
use crate::domain::time::parse_future_time;
use crate::error::Error;

/// `destroy`: `{"cluster": NAME}`, optionally with who asks. Also the input of every destroy
/// schedule (`{"cluster": NAME}`), so a fired schedule and a manual destroy are the same call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterRequest {
    pub cluster: ClusterName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<RequestedBy>,
}

/// `deploy`: `{"cluster": NAME}` or `{"cluster": NAME, "version": GIT_REF}`; without a version the
/// profile's default runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub cluster: ClusterName,
    #[serde(default)]
    pub version: Option<GitRef>,
    #[serde(default)]
    pub requested_by: Option<RequestedBy>,
}

impl DeployRequest {
    pub fn parse(event: serde_json::Value) -> Result<Self, Error> {
        from_event(event, r#"{"cluster": "NAME"} or {"cluster": "NAME", "version": "v5.5.0"}"#)
    }
}

/// `schedule_destroy`: `{"cluster": NAME, "time_to_destroy": RFC3339}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleDestroyRequest {
    pub cluster: ClusterName,
    pub time_to_destroy: Timestamp,
    pub requested_by: Option<RequestedBy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScheduleDestroy {
    cluster: ClusterName,
    time_to_destroy: String,
    #[serde(default)]
    requested_by: Option<RequestedBy>,
}

impl ClusterRequest {
    /// A request nobody signed: the sweeper's, a fired schedule's.
    pub fn new(cluster: ClusterName) -> ClusterRequest {
        ClusterRequest { cluster, requested_by: None }
    }

    pub fn parse(event: serde_json::Value) -> Result<Self, Error> {
        from_event(event, r#"{"cluster": "NAME"}"#)
    }

    /// The event a destroy schedule carries: the cluster alone (who scheduled it is the
    /// schedule's description, and the history's).
    pub fn to_event(&self) -> String {
        serde_json::json!({ "cluster": self.cluster }).to_string()
    }
}

impl ScheduleDestroyRequest {
    pub fn parse(event: serde_json::Value, now: Timestamp) -> Result<Self, Error> {
        let raw: RawScheduleDestroy =
            from_event(event, r#"{"cluster": "NAME", "time_to_destroy": "2026-11-23T18:00:00Z"}"#)?;
        Ok(ScheduleDestroyRequest {
            cluster: raw.cluster,
            time_to_destroy: parse_future_time(&raw.time_to_destroy, now)?,
            requested_by: raw.requested_by,
        })
    }
}

/// Marks an event whose payload was not JSON at all (see `lambda::flag_malformed_json`).
pub const MALFORMED_JSON_KEY: &str = "__payload_is_not_json__";

/// Deserializes an event, turning serde's complaint into a request error that shows the
/// expected shape.
pub fn from_event<T: DeserializeOwned>(event: serde_json::Value, shape: &str) -> Result<T, Error> {
    if let Some(reason) = event.get(MALFORMED_JSON_KEY).and_then(serde_json::Value::as_str) {
        return Err(Error::invalid(format!("the event is not valid JSON ({reason}); send {shape}")));
    }
    if !event.is_object() {
        return Err(Error::invalid(format!("the event must be a JSON object like {shape}")));
    }
    serde_json::from_value(event).map_err(|error| {
        let reason = error.to_string();
        // Validation errors of our own types are already full sentences.
        if reason.starts_with("the ") {
            Error::invalid(reason)
        } else {
            Error::invalid(format!("the event is malformed ({reason}); send {shape}"))
        }
    })
}

/// `status`: `{}` (everything) or `{"cluster": NAME}` (that cluster, with its history).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    #[serde(default)]
    pub cluster: Option<ClusterName>,
}

impl StatusRequest {
    pub fn parse(event: serde_json::Value) -> Result<Self, Error> {
        from_event(event, r#"{} or {"cluster": "NAME"}"#).map_err(|error| Error::invalid(format!("status: {error}")))
    }
}

/// `sweep` takes `{}`: anything else is refused, as for every function.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

pub fn parse_empty(event: serde_json::Value, function: &str) -> Result<(), Error> {
    from_event::<Empty>(event, "{}").map(|_| ()).map_err(|error| Error::invalid(format!("{function}: {error}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn status_and_sweep_take_an_empty_object_only() {
        assert!(parse_empty(json!({}), "status").is_ok());
        for event in [json!({"cluster": "ci-1"}), json!([]), json!("x"), json!(null)] {
            let error = parse_empty(event.clone(), "sweep").unwrap_err();
            assert_eq!(error.code(), "InvalidRequest", "{event}");
            assert!(error.to_string().starts_with("sweep: "), "{error}");
        }
    }

    use super::*;

    fn now() -> Timestamp {
        "2026-11-23T12:00:00Z".parse().unwrap()
    }

    /// Every event of the cluster and run functions takes a valid `requested_by`, and refuses
    /// an invalid one.
    #[test]
    fn every_event_takes_who_asks() {
        let who = "dev.one+ci@example.org";
        let valid = [
            ClusterRequest::parse(json!({"cluster": "ci-1", "requested_by": who})).map(|r| r.requested_by),
            DeployRequest::parse(json!({"cluster": "ci-1", "requested_by": who})).map(|r| r.requested_by),
            ScheduleDestroyRequest::parse(
                json!({"cluster": "ci-1", "time_to_destroy": "2026-11-23T13:00:00Z", "requested_by": who}),
                now(),
            )
            .map(|r| r.requested_by),
        ];
        for parsed in valid {
            assert_eq!(parsed.unwrap().map(|w| w.as_str().to_owned()).as_deref(), Some(who));
        }
        let run = crate::domain::RunRequest::parse(json!({"cluster": "ci-1", "version": "main", "requested_by": who}));
        assert!(matches!(run.unwrap(), crate::domain::RunRequest::Start { requested_by: Some(_), .. }));
        let resume = json!({"run_id": "test-ci-1-20261123t120000-ab12", "requested_by": who});
        assert!(crate::domain::RunRequest::parse(resume).is_ok());
        for bad in ["", "a b", "x/y", "https://example.org", &"a".repeat(65)] {
            let events = [
                ClusterRequest::parse(json!({"cluster": "ci-1", "requested_by": bad})).map(drop),
                DeployRequest::parse(json!({"cluster": "ci-1", "requested_by": bad})).map(drop),
                crate::domain::RunRequest::parse(json!({"cluster": "ci-1", "version": "main", "requested_by": bad}))
                    .map(drop),
            ];
            for event in events {
                assert_eq!(event.unwrap_err().code(), "InvalidRequest", "{bad:?}");
            }
        }
        // The schedule's input names the cluster alone: who scheduled it is the schedule's.
        let signed = ClusterRequest::parse(json!({"cluster": "ci-1", "requested_by": who})).unwrap();
        assert_eq!(signed.to_event(), r#"{"cluster":"ci-1"}"#);
    }

    #[test]
    fn a_cluster_event_round_trips_through_the_schedule_input() {
        let request = ClusterRequest::parse(json!({"cluster": "ci-nightly"})).unwrap();
        assert_eq!(request.to_event(), r#"{"cluster":"ci-nightly"}"#);
        let again = ClusterRequest::parse(serde_json::from_str(&request.to_event()).unwrap()).unwrap();
        assert_eq!(again, request);
    }

    #[test]
    fn malformed_cluster_events_are_invalid_requests() {
        let cases = [
            (json!(null), "JSON object"),
            (json!("developers"), "JSON object"),
            (json!([]), "JSON object"),
            (json!({}), "missing field `cluster`"),
            (json!({"cluster": 7}), "malformed"),
            (json!({"cluster": "developers", "force": true}), "unknown field `force`"),
            (json!({"cluster": "Developers"}), "lowercase DNS label"),
            (json!({"cluster": "ci-$(id)"}), "lowercase DNS label"),
        ];
        for (event, reason) in cases {
            let error = ClusterRequest::parse(event.clone()).unwrap_err();
            assert_eq!(error.code(), "InvalidRequest");
            assert!(error.to_string().contains(reason), "{event}: {error}");
        }
    }

    #[test]
    fn deploy_events_take_an_optional_valid_version() {
        let plain = DeployRequest::parse(json!({"cluster": "developers"})).unwrap();
        assert_eq!(plain.version, None);
        let pinned = DeployRequest::parse(json!({"cluster": "ci-1", "version": "v5.5.0"})).unwrap();
        assert_eq!(pinned.version.unwrap().as_str(), "v5.5.0");
        for event in [
            json!({"cluster": "ci-1", "version": "$(id)"}),
            json!({"cluster": "ci-1", "version": ""}),
            json!({"cluster": "ci-1", "version": 5}),
            json!({"cluster": "ci-1", "version": "main", "nodes": 3}),
        ] {
            assert_eq!(DeployRequest::parse(event.clone()).unwrap_err().code(), "InvalidRequest", "{event}");
        }
    }

    #[test]
    fn schedule_destroy_events_need_a_future_time() {
        let ok = ScheduleDestroyRequest::parse(
            json!({"cluster": "developers", "time_to_destroy": "2026-11-23T13:00:00Z"}),
            now(),
        )
        .unwrap();
        assert_eq!(ok.time_to_destroy, "2026-11-23T13:00:00Z".parse::<Timestamp>().unwrap());
        let cases = [
            json!({"cluster": "developers"}),
            json!({"cluster": "developers", "time_to_destroy": "2026-11-23T11:00:00Z"}),
            json!({"cluster": "developers", "time_to_destroy": "soon"}),
            json!({"cluster": "developers", "time_to_destroy": 1700000000}),
            json!({"cluster": "developers", "time_to_destroy": "2026-11-23T13:00:00Z", "ttl": 5}),
        ];
        for event in cases {
            assert_eq!(
                ScheduleDestroyRequest::parse(event.clone(), now()).unwrap_err().code(),
                "InvalidRequest",
                "{event}"
            );
        }
    }
}
