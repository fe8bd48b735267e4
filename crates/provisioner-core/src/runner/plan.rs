//! Plans: the named steps a TEST or BUILD instance runs, kept in the catalog so a profile (or an
//! old version whose paths differ) can change them without code changes.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The step every plan starts with: clone the repository and check out the version.
pub const CHECKOUT_STEP: &str = "checkout";

/// Where a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepPlace {
    /// On the instance, in the repository.
    #[default]
    Host,
    /// Inside the SlideRule build-environment container, with the repository mounted.
    Container,
}

/// One named step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Lowercase words joined by '-'; reported and logged under this name.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]{0,47}$"))]
    pub name: String,
    /// Bash commands, run with `set -euo pipefail` in the repository. They may use $CLUSTER,
    /// $VERSION, $COMMIT, $DOMAIN, $ORGANIZATION, $REGION, $REGISTRY and $LOG_DIR.
    pub run: String,
    #[serde(default)]
    pub place: StepPlace,
    /// Steps that must pass first; when one did not, this step is skipped. Independent steps
    /// run even after a failure.
    #[serde(default)]
    pub needs: Vec<String>,
}

/// The steps of one kind of run, in order, after the checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    /// Checks names, order and commands, so a bad plan fails when the catalog loads.
    pub fn check(&self, what: &str) -> Result<(), Error> {
        let bad = |why: String| Error::invalid(format!("the {what} plan is invalid: {why}"));
        if self.steps.is_empty() {
            return Err(bad("it has no steps".into()));
        }
        let mut earlier: BTreeSet<&str> = BTreeSet::from([CHECKOUT_STEP]);
        for step in &self.steps {
            let name = step.name.as_str();
            let well_formed = name.len() <= 48
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !well_formed {
                return Err(bad(format!("step name '{name}' is not lowercase words joined by '-'")));
            }
            if earlier.contains(name) {
                return Err(bad(format!("step '{name}' appears twice (or is the built-in checkout)")));
            }
            if step.run.trim().is_empty() || step.run.contains('\0') {
                return Err(bad(format!("step '{name}' has no command")));
            }
            for need in &step.needs {
                if !earlier.contains(need.as_str()) {
                    return Err(bad(format!("step '{name}' needs '{need}', which is not an earlier step")));
                }
            }
            earlier.insert(name);
        }
        Ok(())
    }

    /// Every step name the instance will report, checkout first.
    pub fn step_names(&self) -> Vec<String> {
        std::iter::once(CHECKOUT_STEP.to_owned()).chain(self.steps.iter().map(|s| s.name.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, needs: &[&str]) -> Step {
        Step { name: name.into(), run: "true".into(), place: StepPlace::Host, needs: needs.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn a_plan_names_its_steps_after_the_checkout() {
        let plan = Plan { steps: vec![step("build", &["checkout"]), step("selftest", &["build"])] };
        plan.check("test").unwrap();
        assert_eq!(plan.step_names(), vec!["checkout", "build", "selftest"]);
    }

    #[test]
    fn bad_plans_are_refused() {
        let cases = [
            (Plan { steps: vec![] }, "no steps"),
            (Plan { steps: vec![step("Build", &[])] }, "lowercase"),
            (Plan { steps: vec![step("a;b", &[])] }, "lowercase"),
            (Plan { steps: vec![step("checkout", &[])] }, "twice"),
            (Plan { steps: vec![step("a", &[]), step("a", &[])] }, "twice"),
            (Plan { steps: vec![step("a", &["b"]), step("b", &[])] }, "not an earlier step"),
            (Plan { steps: vec![Step { run: "  ".into(), ..step("a", &[]) }] }, "no command"),
        ];
        for (plan, reason) in cases {
            let error = plan.check("test").unwrap_err();
            assert!(error.to_string().contains(reason), "{error}");
        }
    }
}
