//! Values kept as JSON in one attribute of one item (a profile and version's test summaries, the
//! launch log, a profile's books): read in one call, changed with a write conditioned on the
//! version read, so concurrent changes all land (a writer that lost reads again).

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::*;
use crate::error::{AwsErrorKind, AwsFailure, Error, Result};

/// The attribute every such item's version is kept in.
const VERSION: &str = "version";
/// Reads and conditional writes of an item before a change gives up (another writer won each).
const CHANGE_ATTEMPTS: u32 = 8;

impl DynamoStore {
    /// The value in `attribute` of the item under `key`, and the item's version (0: no item).
    pub(super) async fn read_json<T: DeserializeOwned + Default>(
        &self,
        key: &str,
        attribute: &str,
    ) -> Result<(T, i64)> {
        let Some(item) = self.read(s(key)).await? else { return Ok((T::default(), 0)) };
        let version = item.get(VERSION).and_then(|v| v.as_n().ok()?.parse().ok()).unwrap_or(0);
        let value = text_of(&item, attribute).and_then(|json| serde_json::from_str(&json).ok()).unwrap_or_default();
        Ok((value, version))
    }

    /// The list in `attribute` of the item under `key`, and the item's version (0: no item).
    pub(super) async fn read_list<T: DeserializeOwned>(&self, key: &str, attribute: &str) -> Result<(Vec<T>, i64)> {
        self.read_json(key, attribute).await
    }

    /// Replaces the value with what `change` makes of it (`None`: nothing to change; then
    /// `false`), the item kept until `expires_epoch` of the new value, when it says.
    pub(super) async fn change_json<T: DeserializeOwned + Serialize + Default>(
        &self,
        key: &str,
        attribute: &str,
        change: impl Fn(T) -> Option<T>,
        expires_epoch: impl Fn(&T) -> Option<i64>,
    ) -> Result<bool> {
        for _ in 0..CHANGE_ATTEMPTS {
            let (value, read) = self.read_json::<T>(key, attribute).await?;
            let Some(value) = change(value) else { return Ok(false) };
            let json = serde_json::to_string(&value).map_err(|error| Error::invalid(error.to_string()))?;
            let mut request = self
                .update_item(s(key))
                .expression_attribute_names("#value", attribute)
                .expression_attribute_names("#version", VERSION)
                .expression_attribute_values(":value", s(&json))
                .expression_attribute_values(":next", n(read + 1));
            request = match expires_epoch(&value) {
                Some(expires) => request
                    .update_expression("SET #value = :value, #version = :next, #ttl = :ttl")
                    .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                    .expression_attribute_values(":ttl", n(expires)),
                None => request.update_expression("SET #value = :value, #version = :next"),
            };
            let request = if read == 0 {
                request.condition_expression("attribute_not_exists(#pk)").expression_attribute_names("#pk", KEY)
            } else {
                request.condition_expression("#version = :read").expression_attribute_values(":read", n(read))
            };
            if written(request.send().await, "UpdateItem")? {
                return Ok(true);
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

    /// Replaces the list with what `change` makes of it (`None`: nothing to change), the item kept
    /// until `expires_epoch` of the new list.
    pub(super) async fn change_list<T: DeserializeOwned + Serialize>(
        &self,
        key: &str,
        attribute: &str,
        change: impl Fn(Vec<T>) -> Option<Vec<T>>,
        expires_epoch: impl Fn(&[T]) -> i64,
    ) -> Result<()> {
        self.change_json(key, attribute, change, |list: &Vec<T>| Some(expires_epoch(list))).await.map(drop)
    }
}
