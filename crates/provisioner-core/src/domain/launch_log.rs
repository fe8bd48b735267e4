//! What launches taught: every failed launch (its error code) and every spot interruption of a
//! run's instance, and each attempt's boot time (launch to its first step), kept [`KEPT_FOR`].
//!
//! - A type that failed with a capacity error, or was interrupted, within the profile's
//!   `launch_memory.avoid_minutes` is tried last ([`order_types`]).
//! - After `interruptions` interruptions of a profile's runs within `avoid_minutes`, its runs
//!   launch on demand for `on_demand_minutes` after the last of them ([`on_demand_until`]).
//! - `status` shows the errors grouped by type, market and code ([`launch_errors`]) and the boot
//!   times by type ([`boot_times`]).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{Market, RunId};
use schemars::JsonSchema;

/// How long an event is kept.
pub const KEPT_FOR: SignedDuration = SignedDuration::from_hours(7 * 24);
/// The most events kept (the newest): the item stays small in a capacity crunch.
pub const MAX_EVENTS: usize = 1000;
/// The code an interruption is grouped under.
pub const INTERRUPTED: &str = "interrupted";
/// EC2's codes of a launch refused for want of capacity (the type may have some later).
pub const CAPACITY_CODES: [&str; 3] = ["InsufficientInstanceCapacity", "InsufficientCapacity", "SpotMaxPriceTooLow"];

/// Launch errors and spot interruptions remembered: a type that failed with a capacity error, or
/// was interrupted, within `avoid_minutes` is tried last; after `interruptions` interruptions of
/// a profile's runs within `avoid_minutes`, its runs launch on demand for `on_demand_minutes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LaunchMemory {
    #[schemars(range(min = 1, max = 1440))]
    pub avoid_minutes: u32,
    #[schemars(range(min = 1, max = 100))]
    pub interruptions: u32,
    #[schemars(range(min = 1, max = 1440))]
    pub on_demand_minutes: u32,
}

impl Default for LaunchMemory {
    fn default() -> Self {
        LaunchMemory { avoid_minutes: 30, interruptions: 2, on_demand_minutes: 60 }
    }
}

/// What happened to one launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LaunchOutcome {
    /// EC2 refused the launch with this code.
    Refused { code: String },
    /// The cloud took the instance back (a spot interruption notice).
    Interrupted,
    /// The instance began its first step this many seconds after it was launched.
    Booted { seconds: u32 },
}

/// One launch event of a profile's runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchEvent {
    pub at: Timestamp,
    /// The run and attempt it happened to: one event of each kind per attempt, type and subnet,
    /// however many callers saw it.
    pub run_id: RunId,
    pub attempt: u32,
    pub profile: String,
    pub instance_type: String,
    pub market: Market,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(flatten)]
    pub outcome: LaunchOutcome,
}

impl LaunchEvent {
    /// Whether `other` is the same event, seen again (by another caller, at another moment).
    fn same_as(&self, other: &LaunchEvent) -> bool {
        let kind = |e: &LaunchEvent| match &e.outcome {
            LaunchOutcome::Refused { code } => code.clone(),
            LaunchOutcome::Interrupted => INTERRUPTED.to_owned(),
            LaunchOutcome::Booted { .. } => "booted".to_owned(),
        };
        (&self.run_id, self.attempt, &self.instance_type, &self.subnet, self.market, kind(self))
            == (&other.run_id, other.attempt, &other.instance_type, &other.subnet, other.market, kind(other))
    }

    /// Whether it says the type had no capacity, or lost its instance to the market.
    fn counts_against_type(&self) -> bool {
        match &self.outcome {
            LaunchOutcome::Refused { code } => CAPACITY_CODES.contains(&code.as_str()),
            LaunchOutcome::Interrupted => true,
            LaunchOutcome::Booted { .. } => false,
        }
    }
}

/// The events to keep after adding `new` at `now`: those of the last [`KEPT_FOR`], at most
/// [`MAX_EVENTS`], oldest first.
pub fn keep_events(mut kept: Vec<LaunchEvent>, new: LaunchEvent, now: Timestamp) -> Vec<LaunchEvent> {
    if !kept.iter().any(|event| event.same_as(&new)) {
        kept.push(new);
    }
    kept.retain(|event| now - event.at <= KEPT_FOR);
    kept.sort_by_key(|event| event.at);
    let excess = kept.len().saturating_sub(MAX_EVENTS);
    kept.drain(..excess);
    kept
}

/// `types` in the profile's order, those that failed for capacity or were interrupted within
/// `memory.avoid_minutes` of `now` moved last (in their order).
pub fn order_types(
    types: &[String],
    events: &[LaunchEvent],
    profile: &str,
    memory: &LaunchMemory,
    now: Timestamp,
) -> Vec<String> {
    let window = SignedDuration::from_mins(i64::from(memory.avoid_minutes));
    let avoided = |instance_type: &String| {
        events.iter().any(|event| {
            event.profile == profile
                && &event.instance_type == instance_type
                && event.counts_against_type()
                && now - event.at <= window
        })
    };
    let (last, first): (Vec<&String>, Vec<&String>) = types.iter().partition(|t| avoided(t));
    first.into_iter().chain(last).cloned().collect()
}

/// Until when the profile's runs launch on demand: `memory.on_demand_minutes` after the latest
/// interruption that was the `memory.interruptions`-th within `memory.avoid_minutes`; `None`
/// when that time has passed or never came.
pub fn on_demand_until(
    events: &[LaunchEvent],
    profile: &str,
    memory: &LaunchMemory,
    now: Timestamp,
) -> Option<Timestamp> {
    let mut interrupted: Vec<Timestamp> = events
        .iter()
        .filter(|e| e.profile == profile && e.outcome == LaunchOutcome::Interrupted)
        .map(|e| e.at)
        .collect();
    interrupted.sort();
    let n = memory.interruptions.max(1) as usize;
    let window = SignedDuration::from_mins(i64::from(memory.avoid_minutes));
    let hold = SignedDuration::from_mins(i64::from(memory.on_demand_minutes));
    (n - 1..interrupted.len())
        .rev()
        .find(|&last| interrupted[last] - interrupted[last + 1 - n] <= window)
        .map(|last| interrupted[last] + hold)
        .filter(|until| *until > now)
}

/// Failed launches and interruptions of one instance type, market and code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchErrors {
    pub instance_type: String,
    pub market: Market,
    /// EC2's error code, or `interrupted`.
    pub code: String,
    pub count: usize,
    pub last_at: String,
}

/// The contract's `launch_errors`: the events of the last [`KEPT_FOR`] but boots, grouped by
/// type, market and code, the most recent group first.
pub fn launch_errors(events: &[LaunchEvent], now: Timestamp) -> Vec<LaunchErrors> {
    let mut groups: BTreeMap<(String, Market, String), (usize, Timestamp)> = BTreeMap::new();
    for event in events.iter().filter(|e| now - e.at <= KEPT_FOR) {
        let code = match &event.outcome {
            LaunchOutcome::Refused { code } => code.clone(),
            LaunchOutcome::Interrupted => INTERRUPTED.to_owned(),
            LaunchOutcome::Booted { .. } => continue,
        };
        let group = groups.entry((event.instance_type.clone(), event.market, code)).or_insert((0, event.at));
        group.0 += 1;
        group.1 = group.1.max(event.at);
    }
    let mut errors: Vec<LaunchErrors> = groups
        .into_iter()
        .map(|((instance_type, market, code), (count, last))| LaunchErrors {
            instance_type,
            market,
            code,
            count,
            last_at: super::time::whole_seconds(last).to_string(),
        })
        .collect();
    errors.sort_by(|a, b| b.last_at.cmp(&a.last_at));
    errors
}

/// How long one instance type took to boot over the last [`KEPT_FOR`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootTimes {
    pub instance_type: String,
    pub boots: usize,
    pub median_seconds: u32,
    pub slowest_seconds: u32,
}

/// Each type's boot times (launch to first step) of the last [`KEPT_FOR`]: median and slowest.
pub fn boot_times(events: &[LaunchEvent], now: Timestamp) -> Vec<BootTimes> {
    let mut by_type: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for event in events.iter().filter(|e| now - e.at <= KEPT_FOR) {
        if let LaunchOutcome::Booted { seconds } = event.outcome {
            by_type.entry(&event.instance_type).or_default().push(seconds);
        }
    }
    by_type
        .into_iter()
        .map(|(instance_type, mut seconds)| {
            seconds.sort_unstable();
            BootTimes {
                instance_type: instance_type.to_owned(),
                boots: seconds.len(),
                median_seconds: seconds[(seconds.len() - 1) / 2],
                slowest_seconds: seconds[seconds.len() - 1],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-12-06T12:00:00Z";

    fn at(minutes_ago: i64) -> Timestamp {
        NOW.parse::<Timestamp>().unwrap() - SignedDuration::from_mins(minutes_ago)
    }

    fn event(minutes_ago: i64, instance_type: &str, outcome: LaunchOutcome) -> LaunchEvent {
        LaunchEvent {
            at: at(minutes_ago),
            run_id: RunId::parse(&format!("test-ci-1-20261206t120000-{:04x}", minutes_ago % 65536)).unwrap(),
            attempt: 1,
            profile: "ci".into(),
            instance_type: instance_type.into(),
            market: Market::Spot,
            subnet: None,
            outcome,
        }
    }

    fn refused(minutes_ago: i64, instance_type: &str, code: &str) -> LaunchEvent {
        event(minutes_ago, instance_type, LaunchOutcome::Refused { code: code.into() })
    }

    fn types() -> Vec<String> {
        ["a.large", "b.large", "c.large"].map(String::from).to_vec()
    }

    #[test]
    fn a_type_short_of_capacity_or_interrupted_lately_is_tried_last() {
        let memory = LaunchMemory::default();
        let now = at(0);
        let events = [refused(10, "a.large", "InsufficientInstanceCapacity")];
        assert_eq!(order_types(&types(), &events, "ci", &memory, now), ["b.large", "c.large", "a.large"]);
        let events =
            [event(5, "b.large", LaunchOutcome::Interrupted), refused(1, "a.large", "InsufficientInstanceCapacity")];
        assert_eq!(order_types(&types(), &events, "ci", &memory, now), ["c.large", "a.large", "b.large"]);
        // Past the window, another profile's, or not about capacity: the profile's order.
        for events in [
            vec![refused(31, "a.large", "InsufficientInstanceCapacity")],
            vec![LaunchEvent { profile: "developers".into(), ..refused(1, "a.large", "InsufficientInstanceCapacity") }],
            vec![refused(1, "a.large", "InvalidParameterValue")],
            vec![event(1, "a.large", LaunchOutcome::Booted { seconds: 90 })],
        ] {
            assert_eq!(order_types(&types(), &events, "ci", &memory, now), types(), "{events:?}");
        }
    }

    #[test]
    fn two_interruptions_within_half_an_hour_send_runs_on_demand_for_an_hour() {
        let memory = LaunchMemory::default();
        let interrupted = |minutes_ago| event(minutes_ago, "a.large", LaunchOutcome::Interrupted);
        assert_eq!(on_demand_until(&[interrupted(5)], "ci", &memory, at(0)), None, "one is not enough");
        let twice = [interrupted(40), interrupted(20)];
        assert_eq!(on_demand_until(&twice, "ci", &memory, at(0)), Some(at(20) + SignedDuration::from_mins(60)));
        assert_eq!(on_demand_until(&[interrupted(80), interrupted(30)], "ci", &memory, at(0)), None, "50 min apart");
        assert_eq!(on_demand_until(&[interrupted(100), interrupted(90)], "ci", &memory, at(0)), None, "an hour passed");
        assert_eq!(on_demand_until(&twice, "developers", &memory, at(0)), None, "another profile's");
    }

    #[test]
    fn errors_are_grouped_by_type_market_and_code_and_boots_by_type() {
        let events = [
            refused(50, "a.large", "InsufficientInstanceCapacity"),
            refused(10, "a.large", "InsufficientInstanceCapacity"),
            event(5, "b.large", LaunchOutcome::Interrupted),
            refused(8 * 24 * 60, "c.large", "InsufficientInstanceCapacity"),
            event(3, "b.large", LaunchOutcome::Booted { seconds: 120 }),
            event(2, "b.large", LaunchOutcome::Booted { seconds: 60 }),
            event(1, "b.large", LaunchOutcome::Booted { seconds: 300 }),
        ];
        let errors = launch_errors(&events, at(0));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(
            (errors[0].instance_type.as_str(), errors[0].code.as_str(), errors[0].count),
            ("b.large", INTERRUPTED, 1)
        );
        assert_eq!((errors[1].count, errors[1].last_at.as_str()), (2, "2026-12-06T11:50:00Z"));
        assert_eq!(
            boot_times(&events, at(0)),
            [BootTimes { instance_type: "b.large".into(), boots: 3, median_seconds: 120, slowest_seconds: 300 }]
        );
    }

    #[test]
    fn events_are_kept_a_week_and_at_most_a_thousand() {
        let mut kept = Vec::new();
        for minutes_ago in (0..2000).rev() {
            kept = keep_events(kept, refused(minutes_ago * 10, "a.large", "InsufficientInstanceCapacity"), at(0));
        }
        assert_eq!(kept.len(), MAX_EVENTS);
        assert_eq!(kept.last().unwrap().at, at(0));
        let seen_again = LaunchEvent { at: at(0) + SignedDuration::from_secs(5), ..kept.last().unwrap().clone() };
        let again = keep_events(kept.clone(), seen_again, at(0));
        assert_eq!(again.len(), kept.len(), "the same event once, whoever saw it when");
        let old = keep_events(Vec::new(), refused(8 * 24 * 60, "a.large", "X"), at(0));
        assert!(old.is_empty());
    }
}
