//! A container registry in memory.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Call, Faults};
use crate::domain::ImageTag;
use crate::error::Result;
use crate::ports::Images;

/// The version the shipped catalog's profiles run by default, as `seed` records it.
pub const SEEDED_VERSION: &str = "latest";

/// A registry in memory: the `repository:tag` pairs it holds.
#[derive(Default)]
pub struct FakeImages {
    faults: Arc<Faults>,
    held: Mutex<BTreeSet<String>>,
    calls: Mutex<Vec<Call>>,
}

impl FakeImages {
    pub fn new(faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeImages { faults, ..FakeImages::default() })
    }

    /// Puts `repository:tag` for each repository.
    pub fn push(&self, repositories: &[String], tag: &str) {
        self.held.lock().unwrap().extend(repositories.iter().map(|r| format!("{r}:{tag}")));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Images for FakeImages {
    async fn missing(&self, _registry: &str, repositories: &[String], tag: &ImageTag) -> Result<Vec<String>> {
        self.calls.lock().unwrap().push(Call::MissingImages(repositories.to_vec(), tag.to_string()));
        self.faults.draw("DescribeImages").await?.answer(())?;
        let held = self.held.lock().unwrap();
        Ok(repositories.iter().filter(|r| !held.contains(&format!("{r}:{tag}"))).cloned().collect())
    }
}
