//! The cluster catalog (`clusters/catalog.yaml`): profiles matched by name or pattern, each naming
//! a CloudFormation template and its parameters. The catalog and templates are compiled into the
//! binaries and checked when loaded (`checks.rs`); a unit test loads them, so a bad catalog fails the build.
//!
//! Here: the checked catalog and its lookup (a cluster's profile, its stack's parameters); the
//! file's shapes are in `file.rs`, the prices and a cluster's hourly cost in `prices.rs`.

mod checks;
mod file;
mod prices;
#[cfg(test)]
mod tests;

pub use file::*;
pub use prices::*;

use std::collections::{BTreeMap, BTreeSet};

use jiff::SignedDuration;

use crate::domain::names::shown;
use crate::domain::{ClusterName, ImageTag};
use crate::error::Error;
use crate::settings::ClusterSettings;

/// Parameters the provisioner sets from the request (`ClusterName`, `Version`, the image tag) or
/// itself; besides these it sets the account's settings ([`crate::settings::CLUSTER_SETTINGS`]).
const REQUEST_PARAMETERS: &[&str] = &["ClusterName", "Version", "EnvironmentVersion"];

/// Whether the provisioner sets `parameter` itself: a profile may not set it.
pub fn is_provided(parameter: &str) -> bool {
    REQUEST_PARAMETERS.contains(&parameter) || crate::settings::is_cluster_setting(parameter)
}

/// Every template must take these: the stack is useless without either.
const REQUIRED_PARAMETERS: &[&str] = &["ClusterName", "Version"];

const CATALOG_YAML: &str = include_str!("../../../../clusters/catalog.yaml");

/// Templates a profile may name, compiled in.
const TEMPLATES: &[(&str, &str)] =
    &[("sliderule-cluster.yaml", include_str!("../../../../clusters/sliderule-cluster.yaml"))];

/// A checked profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub patterns: Vec<String>,
    pub template_body: &'static str,
    /// The template's parameters, each with whether it has a default.
    pub declared: BTreeMap<String, bool>,
    pub default_version: ImageTag,
    pub images: Vec<String>,
    pub parameters: BTreeMap<String, String>,
    pub runner: RunnerProfile,
    /// The template's parameter defaults, as text.
    pub defaults: BTreeMap<String, String>,
    pub default_ttl: Option<SignedDuration>,
    pub max_ttl: Option<SignedDuration>,
    pub max_concurrent_runs: RunCaps,
    pub instances: Vec<ClusterInstances>,
    /// US dollars this profile may spend in a calendar month (UTC); `None`: no budget.
    pub monthly_budget_usd: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    profiles: Vec<Profile>,
    plans: Plans,
    prices: Prices,
    runner_image: Option<RunnerImageFile>,
}

impl Catalog {
    /// The catalog shipped with the binaries.
    pub fn shipped() -> Result<Catalog, Error> {
        Catalog::from_yaml(CATALOG_YAML, TEMPLATES)
    }

    /// A catalog of `yaml` over the shipped templates: an edited catalog, checked as the shipped one is.
    pub fn with_shipped_templates(yaml: &str) -> Result<Catalog, Error> {
        Catalog::from_yaml(yaml, TEMPLATES)
    }

    /// Parses and checks a catalog against the given templates.
    pub fn from_yaml(yaml: &str, templates: &[(&str, &'static str)]) -> Result<Catalog, Error> {
        let bad = |why: String| Error::invalid(format!("the cluster catalog is invalid: {why}"));
        let file: CatalogFile = serde_yaml::from_str(yaml).map_err(|e| bad(e.to_string()))?;
        if file.profiles.is_empty() {
            return Err(bad("it has no profiles".into()));
        }
        let mut seen = BTreeSet::new();
        let mut profiles = Vec::new();
        for raw in file.profiles {
            if !seen.insert(raw.name.clone()) {
                return Err(bad(format!("profile '{}' appears twice", raw.name)));
            }
            profiles.push(Profile::from_file(raw, templates, &file.prices).map_err(bad)?);
        }
        let components = crate::instance::plan::check_layouts(&file.plans.layouts)?;
        let mut plans = file.plans;
        plans.test.check("test", &components)?;
        plans.build.check("build", &components)?;
        plans.runner_image = plans.test.for_runner_image();
        plans.test = plans.test.for_runs();
        if let Some(image_run) = &file.runner_image {
            if first_profile(&profiles, &image_run.cluster).is_none() {
                return Err(bad(format!("the runner image's cluster '{}' matches no profile", image_run.cluster)));
            }
            if plans.runner_image.steps.is_empty() {
                return Err(bad(
                    "it names a runner image, and no TEST step is the image's (image: holds or only)".into()
                ));
            }
        }
        Ok(Catalog { profiles, plans, prices: file.prices, runner_image: file.runner_image })
    }

    pub fn plans(&self) -> &Plans {
        &self.plans
    }

    pub fn prices(&self) -> &Prices {
        &self.prices
    }

    /// The name and version the runner image run of `architecture` carries, and the profile whose
    /// runner launches it; `InvalidRequest` for an architecture no runner image is made for.
    pub fn runner_image(&self, architecture: Option<&str>) -> Result<(&RunnerImageFile, &Profile), Error> {
        let Some(image_run) = &self.runner_image else {
            return Err(Error::invalid("the cluster catalog names no runner image (its runner_image section)"));
        };
        let profile = self.profile_for(&image_run.cluster)?;
        let ours = &profile.runner.architecture;
        if let Some(asked) = architecture.filter(|asked| asked != ours) {
            return Err(Error::invalid(format!(
                "the catalog's TEST runs use {ours}, so no {} runner image is made: an image of it would never be \
                 used; ask for {ours} or none",
                shown(asked)
            )));
        }
        Ok((image_run, profile))
    }

    /// The first profile that accepts `cluster`.
    pub fn profile_for(&self, cluster: &ClusterName) -> Result<&Profile, Error> {
        first_profile(&self.profiles, cluster).ok_or_else(|| Error::UnknownCluster(cluster.to_string()))
    }

    pub fn profiles(&self) -> &[Profile] {
        &self.profiles
    }
}

/// The first of `profiles` that accepts `cluster`.
fn first_profile<'a>(profiles: &'a [Profile], cluster: &ClusterName) -> Option<&'a Profile> {
    profiles.iter().find(|profile| profile.patterns.iter().any(|pattern| glob_matches(pattern, cluster.as_str())))
}

impl Profile {
    /// The stack's parameters for `cluster` running `version`: the name and tag, the account's
    /// settings the template declares, and the profile's own. A setting the template needs but the
    /// provisioner was not given is refused here, before anything is created.
    pub fn stack_parameters(
        &self,
        cluster: &ClusterName,
        version: &ImageTag,
        settings: &ClusterSettings,
    ) -> Result<Vec<(String, String)>, Error> {
        let mut parameters: Vec<(String, String)> =
            vec![("ClusterName".into(), cluster.to_string()), ("Version".into(), version.to_string())];
        for (key, has_default) in &self.declared {
            if REQUIRED_PARAMETERS.contains(&key.as_str()) || !is_provided(key) {
                continue;
            }
            match settings.get(key).filter(|value| !value.is_empty()) {
                Some(value) => parameters.push((key.clone(), value.clone())),
                None if *has_default => {}
                None => {
                    return Err(Error::DeployFailed(format!(
                        "the provisioner has no setting for the cluster template's {key} parameter; \
                         set {key} when deploying the provisioner's template, then deploy again"
                    )))
                }
            }
        }
        parameters.extend(self.parameters.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(parameters)
    }
}

/// The JSON Schema of the catalog file, committed as `clusters/catalog.schema.json` for editors.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(CatalogFile);
    serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}
