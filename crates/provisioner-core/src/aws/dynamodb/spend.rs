//! [`Spend`] over the table: one item per profile, its books one JSON value.

use async_trait::async_trait;

use super::*;
use crate::domain::books::Books;
use crate::error::Result;
use crate::ports::Spend;
use crate::table::spend;

#[async_trait]
impl Spend for DynamoStore {
    async fn books(&self, profile: &str) -> Result<Books> {
        Ok(self.read_json(&spend::key(profile), spend::BOOKS).await?.0)
    }

    async fn change(&self, profile: &str, change: &(dyn Fn(Books) -> Option<Books> + Send + Sync)) -> Result<bool> {
        // Kept: the books of a profile are one small item, read by every start.
        self.change_json(&spend::key(profile), spend::BOOKS, change, |_| None).await
    }
}
