//! The profiles' books in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::Faults;
use crate::domain::books::Books;
use crate::error::Result;
use crate::ports::Spend;

#[derive(Default)]
pub struct FakeSpend {
    faults: Arc<Faults>,
    books: Mutex<HashMap<String, Books>>,
}

impl FakeSpend {
    pub fn new(faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(FakeSpend { faults, ..FakeSpend::default() })
    }

    /// The books of `profile` as kept, without a fault.
    pub fn kept(&self, profile: &str) -> Books {
        self.books.lock().unwrap().get(profile).cloned().unwrap_or_default()
    }
}

#[async_trait]
impl Spend for FakeSpend {
    async fn books(&self, profile: &str) -> Result<Books> {
        let effect = self.faults.draw("GetBooks").await?;
        effect.answer(self.kept(profile))
    }

    async fn change(&self, profile: &str, change: &(dyn Fn(Books) -> Option<Books> + Send + Sync)) -> Result<bool> {
        let effect = self.faults.draw("ChangeBooks").await?;
        let mut books = self.books.lock().unwrap();
        let changed = change(books.get(profile).cloned().unwrap_or_default());
        let written = changed.is_some();
        if let Some(changed) = changed {
            books.insert(profile.to_owned(), changed);
        }
        effect.answer(written)
    }
}
