//! The dated price table and what a cluster of a profile costs per hour.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::*;

/// A dated price table: instance type → US dollars per hour. Not a pricing API: status answers
/// from it in one step, and a change of price is a reviewed commit.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// The day the prices were read (YYYY-MM-DD).
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    pub as_of: String,
    /// Where and what they are (region, on-demand or spot, operating system).
    pub basis: String,
    pub hourly_usd: BTreeMap<String, f64>,
}

impl Prices {
    pub fn hourly(&self, instance_type: &str) -> Option<f64> {
        self.hourly_usd.get(instance_type).copied()
    }
}

/// Instances a cluster stack runs, named by the template parameters that set their type and count.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterInstances {
    /// The parameter whose value is the instance type.
    pub type_parameter: String,
    /// The parameter whose value is how many run; one when absent.
    #[serde(default)]
    pub count_parameter: Option<String>,
}

impl Profile {
    /// What a cluster of this profile costs per hour with its stack's `parameters` (a value the
    /// stack does not show comes from the profile, then the template): `None` when a type has no price.
    pub fn hourly_cost(&self, parameters: &BTreeMap<String, String>, prices: &Prices) -> Option<f64> {
        let value =
            |key: &str| parameters.get(key).or_else(|| self.parameters.get(key)).or_else(|| self.defaults.get(key));
        self.instances.iter().try_fold(0.0, |sum, instances| {
            let price = prices.hourly(value(&instances.type_parameter)?)?;
            let count = match &instances.count_parameter {
                Some(parameter) => value(parameter)?.trim().parse::<u32>().ok()?,
                None => 1,
            };
            Some(sum + price * f64::from(count))
        })
    }
}
