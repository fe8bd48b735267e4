//! The cluster catalog (`clusters/catalog.yaml`): profiles matched by name or pattern, each naming
//! a CloudFormation template and its parameters. The catalog and templates are compiled into the
//! binaries and checked when loaded; a unit test loads them, so a bad catalog fails the build.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::Deserialize;

use crate::domain::ClusterName;
use crate::error::Error;
use crate::runner::{Layout, Plan, RunKind};

/// Every stack the provisioner creates is named with this prefix; IAM policies rely on it.
pub const STACK_NAME_PREFIX: &str = "sliderule-cluster-";

/// Parameters the provisioner sets itself; a profile may not set them.
pub const PROVIDED_PARAMETERS: &[&str] = &["ClusterName"];

const CATALOG_YAML: &str = include_str!("../../../clusters/catalog.yaml");

/// Templates a profile may name, compiled in.
const TEMPLATES: &[(&str, &str)] = &[("sliderule-cluster.yaml", include_str!("../../../clusters/sliderule-cluster.yaml"))];

/// The catalog file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// Profiles, tried in order; the first whose `match` accepts a cluster name is used.
    pub profiles: Vec<ProfileFile>,
    /// What TEST and BUILD instances run.
    pub plans: Plans,
}

/// The plans of the two kinds of run, and the repository layouts they run on.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plans {
    /// The layouts the SlideRule repository has had, tried in order on each checkout.
    pub layouts: Vec<Layout>,
    pub test: Plan,
    pub build: Plan,
}

impl Plans {
    pub fn of(&self, kind: RunKind) -> &Plan {
        match kind {
            RunKind::Test => &self.test,
            RunKind::Build => &self.build,
        }
    }
}

/// One profile as written in the catalog.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// A short identifier, unique in the catalog.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]{0,39}$"))]
    pub name: String,
    /// What the profile is for.
    #[serde(default)]
    pub description: String,
    /// Cluster names this profile accepts: exact names, or patterns where `*` stands for any
    /// run of characters (`ci-*`).
    #[serde(rename = "match")]
    #[schemars(length(min = 1))]
    pub patterns: Vec<String>,
    /// File name of a CloudFormation template under `clusters/`.
    pub template: String,
    /// Template parameters. `ClusterName` is set by the provisioner.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// The spot instances that run this cluster's TEST and BUILD.
    #[serde(default)]
    pub runner: RunnerProfile,
}

/// The instances of a profile's runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunnerProfile {
    /// `arm64` or `x86_64`: picks the Amazon Linux 2023 AMI.
    #[serde(default = "default_architecture")]
    pub architecture: String,
    /// Tried in order until one has spot capacity.
    #[serde(default = "default_instance_types")]
    #[schemars(length(min = 1))]
    pub instance_types: Vec<String>,
    /// Size of the encrypted root volume.
    #[serde(default = "default_volume_gb")]
    pub volume_gb: i32,
    /// The deadman: the instance powers off (and terminates) this long after boot.
    #[serde(default = "default_time_limit_minutes")]
    pub time_limit_minutes: u32,
}

fn default_architecture() -> String {
    "arm64".into()
}

fn default_instance_types() -> Vec<String> {
    vec!["c7g.2xlarge".into(), "m7g.2xlarge".into(), "c6g.2xlarge".into()]
}

fn default_volume_gb() -> i32 {
    100
}

fn default_time_limit_minutes() -> u32 {
    180
}

impl Default for RunnerProfile {
    fn default() -> Self {
        RunnerProfile {
            architecture: default_architecture(),
            instance_types: default_instance_types(),
            volume_gb: default_volume_gb(),
            time_limit_minutes: default_time_limit_minutes(),
        }
    }
}

impl RunnerProfile {
    fn check(&self, profile: &str) -> Result<(), String> {
        if !matches!(self.architecture.as_str(), "arm64" | "x86_64") {
            return Err(format!("profile '{profile}' has runner architecture '{}'; use arm64 or x86_64", self.architecture));
        }
        let instance_type = |t: &String| {
            !t.is_empty() && t.len() <= 32 && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        };
        if self.instance_types.is_empty() || !self.instance_types.iter().all(instance_type) {
            return Err(format!("profile '{profile}' needs runner instance types such as c7g.2xlarge"));
        }
        if !(8..=2000).contains(&self.volume_gb) {
            return Err(format!("profile '{profile}' has a runner volume of {} GB; use 8 to 2000", self.volume_gb));
        }
        if !(10..=720).contains(&self.time_limit_minutes) {
            return Err(format!("profile '{profile}' has a runner time limit of {} minutes; use 10 to 720", self.time_limit_minutes));
        }
        Ok(())
    }
}

/// A checked profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub patterns: Vec<String>,
    pub template_name: String,
    pub template_body: &'static str,
    pub parameters: BTreeMap<String, String>,
    pub runner: RunnerProfile,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    profiles: Vec<Profile>,
    plans: Plans,
}

impl Catalog {
    /// The catalog shipped with the binaries.
    pub fn shipped() -> Result<Catalog, Error> {
        Catalog::from_yaml(CATALOG_YAML, TEMPLATES)
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
            let name = raw.name.clone();
            if !seen.insert(name.clone()) {
                return Err(bad(format!("profile '{name}' appears twice")));
            }
            let label = name.len() <= 40
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !label {
                return Err(bad(format!("profile name '{name}' is not a lowercase DNS label")));
            }
            if raw.patterns.is_empty() {
                return Err(bad(format!("profile '{name}' matches no names")));
            }
            for pattern in &raw.patterns {
                let valid =
                    !pattern.is_empty() && pattern.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'*');
                if !valid || pattern.bytes().all(|b| b == b'*') {
                    return Err(bad(format!(
                        "profile '{name}' has pattern '{pattern}'; use lowercase names with '*' wildcards, and no catch-all"
                    )));
                }
            }
            let template_body = templates
                .iter()
                .find(|(file, _)| *file == raw.template)
                .map(|(_, body)| *body)
                .ok_or_else(|| bad(format!("profile '{name}' names template '{}', which is not shipped", raw.template)))?;
            let declared = template_parameters(template_body).map_err(|why| bad(format!("template '{}': {why}", raw.template)))?;
            for key in raw.parameters.keys() {
                if PROVIDED_PARAMETERS.contains(&key.as_str()) {
                    return Err(bad(format!("profile '{name}' sets '{key}', which the provisioner sets")));
                }
                if !declared.contains_key(key) {
                    return Err(bad(format!("profile '{name}' sets '{key}', which template '{}' does not declare", raw.template)));
                }
            }
            for (key, has_default) in &declared {
                if !has_default && !raw.parameters.contains_key(key) && !PROVIDED_PARAMETERS.contains(&key.as_str()) {
                    return Err(bad(format!("profile '{name}' does not set '{key}', which template '{}' requires", raw.template)));
                }
            }
            if !declared.contains_key("ClusterName") {
                return Err(bad(format!("template '{}' does not declare the ClusterName parameter", raw.template)));
            }
            raw.runner.check(&name).map_err(bad)?;
            profiles.push(Profile {
                name,
                patterns: raw.patterns,
                template_name: raw.template,
                template_body,
                parameters: raw.parameters,
                runner: raw.runner,
            });
        }
        let components = crate::runner::plan::check_layouts(&file.plans.layouts)?;
        file.plans.test.check("test", &components)?;
        file.plans.build.check("build", &components)?;
        Ok(Catalog { profiles, plans: file.plans })
    }

    pub fn plans(&self) -> &Plans {
        &self.plans
    }

    /// The first profile that accepts `cluster`.
    pub fn profile_for(&self, cluster: &ClusterName) -> Result<&Profile, Error> {
        self.profiles
            .iter()
            .find(|profile| profile.patterns.iter().any(|pattern| glob_matches(pattern, cluster.as_str())))
            .ok_or_else(|| Error::UnknownCluster(cluster.to_string()))
    }

    pub fn profiles(&self) -> &[Profile] {
        &self.profiles
    }
}

impl Profile {
    /// The stack's parameters for `cluster`: the profile's, plus the ones the provisioner sets.
    pub fn stack_parameters(&self, cluster: &ClusterName) -> Vec<(String, String)> {
        let mut parameters: Vec<(String, String)> = vec![("ClusterName".into(), cluster.to_string())];
        parameters.extend(self.parameters.iter().map(|(k, v)| (k.clone(), v.clone())));
        parameters
    }
}

/// The CloudFormation stack that holds `cluster`.
pub fn stack_name(cluster: &ClusterName) -> String {
    format!("{STACK_NAME_PREFIX}{cluster}")
}

/// The JSON Schema of the catalog file, committed as `clusters/catalog.schema.json` for editors.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(CatalogFile);
    serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
}

/// The template's parameters, each with whether it has a default.
fn template_parameters(body: &str) -> Result<BTreeMap<String, bool>, String> {
    let template: serde_yaml::Value = serde_yaml::from_str(body).map_err(|e| e.to_string())?;
    let parameters = template.get("Parameters").and_then(serde_yaml::Value::as_mapping).ok_or("it has no Parameters section")?;
    parameters
        .iter()
        .map(|(key, spec)| {
            let key = key.as_str().ok_or("a parameter name is not a string")?;
            Ok((key.to_owned(), spec.get("Default").is_some()))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> ClusterName {
        ClusterName::parse(raw).unwrap()
    }

    #[test]
    fn the_shipped_catalog_loads_and_accepts_developers_and_ci_names() {
        let catalog = Catalog::shipped().unwrap();
        for cluster in ["developers", "ci-nightly", "ci-1", "ci-pr-1234"] {
            catalog.profile_for(&name(cluster)).unwrap();
        }
    }

    #[test]
    fn the_shipped_catalog_has_no_catch_all() {
        let catalog = Catalog::shipped().unwrap();
        for cluster in ["other", "ci", "developer", "developers2", "xci-1"] {
            assert_eq!(catalog.profile_for(&name(cluster)).unwrap_err().code(), "UnknownCluster", "{cluster}");
        }
    }

    #[test]
    fn the_committed_schema_matches_the_catalog_types() {
        let committed = include_str!("../../../clusters/catalog.schema.json");
        assert_eq!(committed, json_schema(), "run `make schema` to refresh clusters/catalog.schema.json");
    }

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_matches("ci-*", "ci-1"));
        assert!(glob_matches("ci-*", "ci-"));
        assert!(!glob_matches("ci-*", "xci-1"));
        assert!(glob_matches("developers", "developers"));
        assert!(!glob_matches("developers", "developers2"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        assert!(!glob_matches("ab*ba", "aba"));
    }

    const TEMPLATE: &str =
        "Parameters:\n  ClusterName: {Type: String}\n  Size: {Type: String}\n  Color: {Type: String, Default: red}\nResources: {}\n";

    const PLANS: &str = "plans:\n  layouts: [{name: L, present: [x], components: {}}]\n  test: [{name: a, run: 'true'}]\n  build: [{name: b, run: 'true'}]\n";

    fn load(yaml: &str) -> Result<Catalog, Error> {
        Catalog::from_yaml(&format!("{yaml}{PLANS}"), &[("t.yaml", TEMPLATE)])
    }

    #[test]
    fn a_good_catalog_loads() {
        let catalog = load("profiles:\n- name: p\n  match: [a, 'b-*']\n  template: t.yaml\n  parameters: {Size: '3'}\n").unwrap();
        let profile = catalog.profile_for(&name("b-7")).unwrap();
        assert_eq!(
            profile.stack_parameters(&name("b-7")),
            vec![("ClusterName".to_string(), "b-7".to_string()), ("Size".to_string(), "3".to_string())]
        );
    }

    #[test]
    fn bad_catalogs_are_refused_with_the_reason() {
        let cases = [
            ("profiles: []\n", "no profiles"),
            ("profiles:\n- name: p\n  match: [a]\n  template: t.yaml\n  parameters: {Size: '1'}\n  extra: 1\n", "unknown field"),
            ("profiles:\n- name: p\n  match: [a]\n  template: missing.yaml\n", "not shipped"),
            ("profiles:\n- name: p\n  match: ['*']\n  template: t.yaml\n  parameters: {Size: '1'}\n", "catch-all"),
            ("profiles:\n- name: p\n  match: ['A*']\n  template: t.yaml\n  parameters: {Size: '1'}\n", "pattern"),
            ("profiles:\n- name: p\n  match: []\n  template: t.yaml\n  parameters: {Size: '1'}\n", "matches no names"),
            ("profiles:\n- name: p\n  match: [a]\n  template: t.yaml\n", "requires"),
            ("profiles:\n- name: p\n  match: [a]\n  template: t.yaml\n  parameters: {Size: '1', Nope: x}\n", "does not declare"),
            ("profiles:\n- name: p\n  match: [a]\n  template: t.yaml\n  parameters: {Size: '1', ClusterName: x}\n", "provisioner sets"),
            ("profiles:\n- {name: p, match: [a], template: t.yaml, parameters: {Size: '1'}}\n- {name: p, match: [b], template: t.yaml, parameters: {Size: '1'}}\n", "twice"),
        ];
        for (yaml, reason) in cases {
            let error = load(yaml).unwrap_err();
            assert!(error.to_string().contains(reason), "{yaml}: {error}");
        }
    }
}
