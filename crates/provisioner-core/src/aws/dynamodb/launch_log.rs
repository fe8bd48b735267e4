//! [`LaunchLog`] over the table: one item, its events one JSON list.

use async_trait::async_trait;
use jiff::Timestamp;

use super::*;
use crate::domain::launch_log::{keep_events, LaunchEvent, KEPT_FOR};
use crate::error::Result;
use crate::ports::LaunchLog;
use crate::table::launch_log;

#[async_trait]
impl LaunchLog for DynamoStore {
    async fn record(&self, event: &LaunchEvent) -> Result<()> {
        let add = |kept: Vec<LaunchEvent>| Some(keep_events(kept, event.clone(), event.at));
        let expires = |kept: &[LaunchEvent]| (kept.last().map_or(event.at, |newest| newest.at) + KEPT_FOR).as_second();
        self.change_list(launch_log::KEY_VALUE, launch_log::EVENTS, add, expires).await
    }

    async fn recent(&self, now: Timestamp) -> Result<Vec<LaunchEvent>> {
        let (events, _): (Vec<LaunchEvent>, _) = self.read_list(launch_log::KEY_VALUE, launch_log::EVENTS).await?;
        Ok(events.into_iter().filter(|event| now - event.at <= KEPT_FOR).collect())
    }
}
