//! Lists kept as JSON in one attribute of one item (a profile and version's test summaries, the
//! launch log): read in one call, changed with a write conditioned on the version read, so
//! concurrent changes all land (a writer that lost reads again).

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::*;
use crate::error::{AwsErrorKind, AwsFailure, Error, Result};

/// The attribute every list item's version is kept in.
const VERSION: &str = "version";
/// Reads and conditional writes of an item before a change gives up (another writer won each).
const CHANGE_ATTEMPTS: u32 = 8;

impl DynamoStore {
    /// The list in `attribute` of the item under `key`, and the item's version (0: no item).
    pub(super) async fn read_list<T: DeserializeOwned>(&self, key: &str, attribute: &str) -> Result<(Vec<T>, i64)> {
        let Some(item) = self.read(s(key)).await? else { return Ok((Vec::new(), 0)) };
        let version = item.get(VERSION).and_then(|v| v.as_n().ok()?.parse().ok()).unwrap_or(0);
        let list = text_of(&item, attribute).and_then(|json| serde_json::from_str(&json).ok()).unwrap_or_default();
        Ok((list, version))
    }

    /// Replaces the list with what `change` makes of it (`None`: nothing to change), the item kept
    /// until `expires_epoch` of the new list.
    pub(super) async fn change_list<T: DeserializeOwned + Serialize>(
        &self,
        key: &str,
        attribute: &str,
        change: impl Fn(Vec<T>) -> Option<Vec<T>>,
        expires_epoch: impl Fn(&[T]) -> i64,
    ) -> Result<()> {
        for _ in 0..CHANGE_ATTEMPTS {
            let (list, read) = self.read_list::<T>(key, attribute).await?;
            let Some(list) = change(list) else { return Ok(()) };
            let json = serde_json::to_string(&list).map_err(|error| Error::invalid(error.to_string()))?;
            let request = self
                .update_item(s(key))
                .update_expression("SET #list = :list, #version = :next, #ttl = :ttl")
                .expression_attribute_names("#list", attribute)
                .expression_attribute_names("#version", VERSION)
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":list", s(&json))
                .expression_attribute_values(":next", n(read + 1))
                .expression_attribute_values(":ttl", n(expires_epoch(&list)));
            let request = if read == 0 {
                request.condition_expression("attribute_not_exists(#pk)").expression_attribute_names("#pk", KEY)
            } else {
                request.condition_expression("#version = :read").expression_attribute_values(":read", n(read))
            };
            if written(request.send().await, "UpdateItem")? {
                return Ok(());
            }
        }
        Err(Error::Aws(AwsFailure {
            service: SERVICE,
            operation: "UpdateItem",
            code: "ConditionalCheckFailedException".into(),
            message: format!("other writers changed {key} first {CHANGE_ATTEMPTS} times"),
            kind: AwsErrorKind::Throttled,
        }))
    }
}
