//! A clock that follows tokio's (pausable) time.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};

use crate::ports::Clock;

/// Wall-clock time that moves with `tokio::time`: under `start_paused` it jumps as tasks sleep.
pub struct TestClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl TestClock {
    pub fn starting_at(base: Timestamp) -> Arc<Self> {
        Arc::new(TestClock { base, start: tokio::time::Instant::now() })
    }
}

#[async_trait]
impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.start.elapsed()).unwrap_or(SignedDuration::MAX);
        self.base + elapsed
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}
