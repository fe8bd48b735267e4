//! Prints, as JSON, each run kind's user-data size for the shipped catalog with the longest valid
//! values: the script, what EC2 receives (gzip), EC2's limit and the budget. `make bench` reports it.

use provisioner_core::catalog::Catalog;
use provisioner_core::domain::names::{MAX_CLUSTER_NAME_LEN, MAX_GIT_REF_LEN};
use provisioner_core::domain::{ClusterName, GitRef, RunKind, UserData, EC2_USER_DATA_LIMIT, USER_DATA_BUDGET};
use provisioner_core::instance::{longest_values, render};

fn main() {
    let catalog = Catalog::shipped().expect("the shipped catalog loads");
    let plans = catalog.plans();
    let kinds: Vec<serde_json::Value> = RunKind::ALL
        .into_iter()
        .map(|kind| {
            let mut values = longest_values(kind);
            values.cluster = ClusterName::parse(&format!("c{}", "x".repeat(MAX_CLUSTER_NAME_LEN - 1))).unwrap();
            values.version = GitRef::parse(&format!("v{}", "1".repeat(MAX_GIT_REF_LEN - 1))).unwrap();
            let script = render(plans.of(kind), &plans.layouts, &values).expect("the plan renders");
            let user_data = UserData::compress(&script).expect("within EC2's limit");
            serde_json::json!({
                "kind": kind.as_str(),
                "script_bytes": script.len(),
                "user_data_bytes": user_data.len(),
                "limit_bytes": EC2_USER_DATA_LIMIT,
                "budget_bytes": USER_DATA_BUDGET,
                "headroom_percent": 100.0 * (1.0 - user_data.len() as f64 / EC2_USER_DATA_LIMIT as f64),
            })
        })
        .collect();
    println!("{}", serde_json::Value::Array(kinds));
}
