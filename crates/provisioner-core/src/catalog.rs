//! The cluster catalog (`clusters/catalog.yaml`): profiles matched by name or pattern, each naming
//! a CloudFormation template and its parameters. The catalog and templates are compiled into the
//! binaries and checked when loaded; a unit test loads them, so a bad catalog fails the build.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::domain::names::shown;
use crate::domain::{Attempt, AttemptOutcome, Market, RunKind};
use crate::domain::{ClusterName, GitRef, ImageTag};
use crate::error::Error;
use crate::instance::{Layout, Plan};
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

const CATALOG_YAML: &str = include_str!("../../../clusters/catalog.yaml");

/// Templates a profile may name, compiled in.
const TEMPLATES: &[(&str, &str)] =
    &[("sliderule-cluster.yaml", include_str!("../../../clusters/sliderule-cluster.yaml"))];

/// The catalog file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// Profiles, tried in order; the first whose `match` accepts a cluster name is used.
    pub profiles: Vec<ProfileFile>,
    /// What TEST and BUILD instances run.
    pub plans: Plans,
    /// Hourly prices of the instance types clusters and runs use: what status reports costs from.
    pub prices: Prices,
    /// Whose runner the runner image run uses and what it checks out; none: no runner image.
    #[serde(default)]
    pub runner_image: Option<RunnerImageFile>,
}

/// The runner image run, as the catalog names it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunnerImageFile {
    /// The name its run carries: its profile's runner launches it, and its budget pays for it.
    #[schemars(with = "String")]
    pub cluster: ClusterName,
    /// The version it checks out, whose client environments and browsers it caches.
    #[schemars(with = "String")]
    pub version: GitRef,
}

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

/// A profile's caps on concurrent runs, per kind; no cap when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCaps {
    #[schemars(range(min = 1))]
    pub test: Option<u32>,
    #[schemars(range(min = 1))]
    pub build: Option<u32>,
}

impl RunCaps {
    /// The runner image run has no cap: one per architecture is active at most.
    pub fn of(&self, kind: RunKind) -> Option<u32> {
        match kind {
            RunKind::Test => self.test,
            RunKind::Build => self.build,
            RunKind::RunnerImage => None,
        }
    }
}

/// The plans of the two kinds of run, and the repository layouts they run on.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plans {
    /// The layouts the SlideRule repository has had, tried in order on each checkout.
    pub layouts: Vec<Layout>,
    /// With the steps only the runner image run runs (`image: only`), which TEST runs leave out.
    pub test: Plan,
    pub build: Plan,
    /// The TEST steps of the runner image (`image` set), derived when the catalog loads.
    #[serde(skip, default = "no_plan")]
    #[schemars(skip)]
    pub runner_image: Plan,
}

fn no_plan() -> Plan {
    Plan::new(Vec::new())
}

impl Plans {
    /// The plan a run of `kind` carries out.
    pub fn of(&self, kind: RunKind) -> &Plan {
        match kind {
            RunKind::Test => &self.test,
            RunKind::Build => &self.build,
            RunKind::RunnerImage => &self.runner_image,
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
    /// The version a deploy without one runs: a git ref or one of the repository's image tags
    /// (`latest` for the newest release, `unstable` for main).
    pub version: String,
    /// The image repositories the template runs at the version's tag: a deploy checks that each
    /// holds the tag before it creates anything.
    #[schemars(length(min = 1))]
    pub images: Vec<String>,
    /// Template parameters, besides those the provisioner sets (`is_provided`).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// The spot instances that run this cluster's TEST and BUILD.
    #[serde(default)]
    pub runner: RunnerProfile,
    /// A deploy that creates a cluster schedules its destroy this long after; none when absent.
    #[serde(default)]
    #[schemars(range(min = 10, max = 10080))]
    pub default_ttl_minutes: Option<u32>,
    /// The longest a destroy may be scheduled ahead, and the age past which the sweeper destroys
    /// a cluster that has no destroy schedule; no limit when absent.
    #[serde(default)]
    #[schemars(range(min = 10, max = 10080))]
    pub max_ttl_minutes: Option<u32>,
    /// Caps on concurrent runs of this profile's clusters, per kind.
    #[serde(default)]
    pub max_concurrent_runs: RunCaps,
    /// The instances a cluster of this profile runs, for its cost.
    #[serde(default)]
    pub instances: Vec<ClusterInstances>,
    /// What this profile's clusters and runs may cost in a calendar month (UTC), estimated from
    /// the price table: once reached, what would add cost (a deploy that creates, a run) is
    /// refused with `BudgetExceeded`. Nothing running is stopped. No budget when absent.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub monthly_budget_usd: Option<f64>,
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
    /// The deadman: the instance powers off (and terminates) this long after boot. Each attempt
    /// has its own; a held instance adds its hold.
    #[serde(default = "default_time_limit_minutes")]
    pub time_limit_minutes: u32,
    /// Attempts a run may take when the cloud ends one (interruption, lost, boot timeout, capacity).
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 5))]
    pub max_attempts: u32,
    /// Whether the last attempt runs on demand, and an attempt that no type or subnet has spot
    /// capacity for falls back to on-demand instead of ending `CapacityUnavailable`.
    #[serde(default = "default_on_demand_fallback")]
    pub on_demand_fallback: bool,
    /// An attempt whose instance has not reported its first step this long after launch is
    /// terminated and retried as `boot_timeout`.
    #[serde(default = "default_boot_timeout_minutes")]
    #[schemars(range(min = 2, max = 60))]
    pub boot_timeout_minutes: u32,
    /// A TEST run launches from the newest runner image of its architecture and plan no older than
    /// this; from the plain Amazon Linux AMI when there is none.
    #[serde(default = "default_runner_image_max_age_days")]
    #[schemars(range(min = 1, max = 90))]
    pub runner_image_max_age_days: u32,
}

fn default_runner_image_max_age_days() -> u32 {
    14
}

fn default_max_attempts() -> u32 {
    3
}

fn default_on_demand_fallback() -> bool {
    true
}

fn default_boot_timeout_minutes() -> u32 {
    10
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
            max_attempts: default_max_attempts(),
            on_demand_fallback: default_on_demand_fallback(),
            boot_timeout_minutes: default_boot_timeout_minutes(),
            runner_image_max_age_days: default_runner_image_max_age_days(),
        }
    }
}

impl RunnerProfile {
    /// Attempt `number` of a run that starts it `now`: on demand when it is the last of several
    /// and the profile says so; its check-in deadline and time limit from the profile.
    pub fn attempt(&self, number: u32, now: Timestamp) -> Attempt {
        let last = number > 1 && number >= self.max_attempts;
        Attempt {
            number,
            instance_id: None,
            market: if last && self.on_demand_fallback { Market::OnDemand } else { Market::Spot },
            instance_type: None,
            started_at: now,
            ended_at: None,
            outcome: AttemptOutcome::Running,
            check_in_by: now + SignedDuration::from_mins(i64::from(self.boot_timeout_minutes)),
            deadline: now + SignedDuration::from_mins(i64::from(self.time_limit_minutes)),
            step: None,
            log_location: String::new(),
        }
    }

    fn check(&self, profile: &str) -> Result<(), String> {
        if !matches!(self.architecture.as_str(), "arm64" | "x86_64") {
            return Err(format!(
                "profile '{profile}' has runner architecture '{}'; use arm64 or x86_64",
                self.architecture
            ));
        }
        let instance_type = |t: &String| {
            !t.is_empty()
                && t.len() <= 32
                && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        };
        if self.instance_types.is_empty() || !self.instance_types.iter().all(instance_type) {
            return Err(format!("profile '{profile}' needs runner instance types such as c7g.2xlarge"));
        }
        if !(8..=2000).contains(&self.volume_gb) {
            return Err(format!("profile '{profile}' has a runner volume of {} GB; use 8 to 2000", self.volume_gb));
        }
        if !(10..=720).contains(&self.time_limit_minutes) {
            return Err(format!(
                "profile '{profile}' has a runner time limit of {} minutes; use 10 to 720",
                self.time_limit_minutes
            ));
        }
        if !(1..=90).contains(&self.runner_image_max_age_days) {
            return Err(format!(
                "profile '{profile}' accepts runner images {} days old; use 1 to 90",
                self.runner_image_max_age_days
            ));
        }
        if !(1..=5).contains(&self.max_attempts) {
            return Err(format!("profile '{profile}' allows {} runner attempts; use 1 to 5", self.max_attempts));
        }
        if !(2..=60).contains(&self.boot_timeout_minutes) || self.boot_timeout_minutes >= self.time_limit_minutes {
            return Err(format!(
                "profile '{profile}' has a runner boot timeout of {} minutes; use 2 to 60, under its time limit",
                self.boot_timeout_minutes
            ));
        }
        Ok(())
    }
}

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

/// A profile's parameters as its template declares them: whether each has a default, and the
/// defaults.
struct Declared {
    has_default: BTreeMap<String, bool>,
    defaults: BTreeMap<String, String>,
}

impl Profile {
    /// A profile of the catalog file, checked: its name and patterns, its template and parameters,
    /// its default version and images, its runner, lifetimes and caps, and that every instance
    /// type it uses is priced.
    fn from_file(raw: ProfileFile, templates: &[(&str, &'static str)], prices: &Prices) -> Result<Profile, String> {
        let name = raw.name.clone();
        check_name_and_patterns(&raw)?;
        let template_body = templates
            .iter()
            .find(|(file, _)| *file == raw.template)
            .map(|(_, body)| *body)
            .ok_or_else(|| format!("profile '{name}' names template '{}', which is not shipped", raw.template))?;
        let declared = declared_parameters(template_body, &raw.template)?;
        check_parameters(&raw, &declared)?;
        let default_version = GitRef::parse(&raw.version)
            .and_then(|version| ImageTag::to_deploy(&version))
            .map_err(|why| format!("profile '{name}' has default version '{}': {why}", raw.version))?;
        check_images(&raw)?;
        raw.runner.check(&name)?;
        check_lifetimes(&name, raw.default_ttl_minutes, raw.max_ttl_minutes)?;
        if raw.max_concurrent_runs.test == Some(0) || raw.max_concurrent_runs.build == Some(0) {
            return Err(format!("profile '{name}' caps runs at 0; give at least 1, or no cap"));
        }
        check_priced(&raw, &declared, prices)?;
        if let Some(budget) = raw.monthly_budget_usd.filter(|usd| !usd.is_finite() || *usd < 0.0) {
            return Err(format!("profile '{name}' has a monthly budget of {budget} USD; give 0 or more, or none"));
        }
        let minutes = |m: Option<u32>| m.map(|m| SignedDuration::from_mins(i64::from(m)));
        Ok(Profile {
            name,
            patterns: raw.patterns,
            template_body,
            declared: declared.has_default,
            default_version,
            images: raw.images,
            parameters: raw.parameters,
            runner: raw.runner,
            defaults: declared.defaults,
            default_ttl: minutes(raw.default_ttl_minutes),
            max_ttl: minutes(raw.max_ttl_minutes),
            max_concurrent_runs: raw.max_concurrent_runs,
            instances: raw.instances,
            monthly_budget_usd: raw.monthly_budget_usd,
        })
    }
}

/// The first of `profiles` that accepts `cluster`.
fn first_profile<'a>(profiles: &'a [Profile], cluster: &ClusterName) -> Option<&'a Profile> {
    profiles.iter().find(|profile| profile.patterns.iter().any(|pattern| glob_matches(pattern, cluster.as_str())))
}

/// A lowercase DNS label, matching names by patterns of its own (no catch-all).
fn check_name_and_patterns(raw: &ProfileFile) -> Result<(), String> {
    let name = &raw.name;
    let label = name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !label {
        return Err(format!("profile name '{name}' is not a lowercase DNS label"));
    }
    if raw.patterns.is_empty() {
        return Err(format!("profile '{name}' matches no names"));
    }
    for pattern in &raw.patterns {
        let valid = !pattern.is_empty()
            && pattern.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'*');
        if !valid || pattern.bytes().all(|b| b == b'*') {
            return Err(format!(
                "profile '{name}' has pattern '{pattern}'; use lowercase names with '*' wildcards, and no catch-all"
            ));
        }
    }
    Ok(())
}

fn declared_parameters(template_body: &str, template: &str) -> Result<Declared, String> {
    let defaults = template_parameters(template_body).map_err(|why| format!("template '{template}': {why}"))?;
    let has_default = defaults.iter().map(|(k, v)| (k.clone(), v.is_some())).collect();
    let defaults = defaults.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
    Ok(Declared { has_default, defaults })
}

/// A profile sets only what its template declares and the provisioner does not set, and every
/// parameter the template requires is set by someone.
fn check_parameters(raw: &ProfileFile, declared: &Declared) -> Result<(), String> {
    let (name, template) = (&raw.name, &raw.template);
    for key in raw.parameters.keys() {
        if is_provided(key) {
            return Err(format!("profile '{name}' sets '{key}', which the provisioner sets"));
        }
        if !declared.has_default.contains_key(key) {
            return Err(format!("profile '{name}' sets '{key}', which template '{template}' does not declare"));
        }
    }
    for (key, has_default) in &declared.has_default {
        if !has_default && !raw.parameters.contains_key(key) && !is_provided(key) {
            return Err(format!("profile '{name}' does not set '{key}', which template '{template}' requires"));
        }
    }
    for key in REQUIRED_PARAMETERS {
        if !declared.has_default.contains_key(*key) {
            return Err(format!("template '{template}' does not declare the {key} parameter"));
        }
    }
    Ok(())
}

fn check_images(raw: &ProfileFile) -> Result<(), String> {
    let repository = |r: &String| {
        !r.is_empty() && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_./".contains(&b))
    };
    if raw.images.is_empty() || !raw.images.iter().all(repository) {
        return Err(format!(
            "profile '{}' needs the image repositories its template runs, such as 'sliderule'",
            raw.name
        ));
    }
    Ok(())
}

/// Every instance type the profile's runs and clusters use is in the price table.
fn check_priced(raw: &ProfileFile, declared: &Declared, prices: &Prices) -> Result<(), String> {
    let name = &raw.name;
    let priced = |instance_type: &str, what: &str| match prices.hourly(instance_type) {
        Some(price) if price.is_finite() && price >= 0.0 => Ok(()),
        _ => Err(format!(
            "profile '{name}' uses instance type '{instance_type}' ({what}), which the price table does not list"
        )),
    };
    for instance_type in &raw.runner.instance_types {
        priced(instance_type, "runner")?;
    }
    for instances in &raw.instances {
        for parameter in std::iter::once(&instances.type_parameter).chain(&instances.count_parameter) {
            if !declared.has_default.contains_key(parameter) {
                return Err(format!(
                    "profile '{name}' counts instances by '{parameter}', which template '{}' does not declare",
                    raw.template
                ));
            }
        }
        let parameter = &instances.type_parameter;
        match raw.parameters.get(parameter).or(declared.defaults.get(parameter)) {
            Some(instance_type) => priced(instance_type, parameter)?,
            None => return Err(format!("profile '{name}' gives no instance type for '{parameter}'")),
        }
    }
    Ok(())
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

fn check_lifetimes(profile: &str, default: Option<u32>, max: Option<u32>) -> Result<(), String> {
    for (what, minutes) in [("default_ttl_minutes", default), ("max_ttl_minutes", max)] {
        if minutes.is_some_and(|m| !(10..=10080).contains(&m)) {
            return Err(format!("profile '{profile}' has {what} {}; use 10 to 10080 (a week)", minutes.unwrap_or(0)));
        }
    }
    if let (Some(default), Some(max)) = (default, max) {
        if default > max {
            return Err(format!(
                "profile '{profile}' has default_ttl_minutes {default} beyond its max_ttl_minutes {max}"
            ));
        }
    }
    Ok(())
}

/// The JSON Schema of the catalog file, committed as `clusters/catalog.schema.json` for editors.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(CatalogFile);
    serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
}

/// The template's parameters, each with its default as text, if it has one.
fn template_parameters(body: &str) -> Result<BTreeMap<String, Option<String>>, String> {
    let template: serde_yaml::Value = serde_yaml::from_str(body).map_err(|e| e.to_string())?;
    let parameters =
        template.get("Parameters").and_then(serde_yaml::Value::as_mapping).ok_or("it has no Parameters section")?;
    parameters
        .iter()
        .map(|(key, spec)| {
            let key = key.as_str().ok_or("a parameter name is not a string")?;
            let default = spec.get("Default").map(|value| match value {
                serde_yaml::Value::String(text) => text.clone(),
                other => serde_yaml::to_string(other).unwrap_or_default().trim().to_owned(),
            });
            Ok((key.to_owned(), default))
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
        "Parameters:\n  ClusterName: {Type: String}\n  Version: {Type: String}\n  Domain: {Type: String}\n  \
                            Size: {Type: String}\n  Color: {Type: String, Default: red}\nResources: {}\n";

    const PLANS: &str =
        "plans:\n  layouts: [{name: L, present: [x], components: {}}]\n  test: {steps: [{name: a, run: \
        'true'}]}\n  build: {steps: [{name: b, run: 'true'}]}\nprices: {as_of: 2026-11-01, basis: test, hourly_usd: \
        {c7g.2xlarge: 0.29, m7g.2xlarge: 0.33, c6g.2xlarge: 0.27, t.big: 2.0}}\n";

    /// A profile `p` for `match`, with `extra` YAML fields (flow style) added.
    fn profile(patterns: &str, extra: &str) -> String {
        format!("- {{name: p, match: {patterns}, template: t.yaml, version: latest, images: [sliderule]{extra}}}\n")
    }

    fn load(yaml: &str) -> Result<Catalog, Error> {
        Catalog::from_yaml(&format!("{yaml}{PLANS}"), &[("t.yaml", TEMPLATE)])
    }

    #[test]
    fn a_good_catalog_loads() {
        let catalog = load(&format!("profiles:\n{}", profile("[a, 'b-*']", ", parameters: {Size: '3'}"))).unwrap();
        let profile = catalog.profile_for(&name("b-7")).unwrap();
        assert_eq!(profile.default_version.as_str(), "latest");
        let settings =
            ClusterSettings::from([("Domain".into(), "example.org".into()), ("HostedZoneId".into(), "Z1".into())]);
        let tag = ImageTag::to_deploy(&GitRef::parse("main").unwrap()).unwrap();
        let pairs =
            |list: &[(&str, &str)]| list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(
            profile.stack_parameters(&name("b-7"), &tag, &settings).unwrap(),
            pairs(&[("ClusterName", "b-7"), ("Version", "unstable"), ("Domain", "example.org"), ("Size", "3")])
        );
        let error = profile.stack_parameters(&name("b-7"), &tag, &ClusterSettings::new()).unwrap_err();
        assert!(error.to_string().contains("Domain parameter"), "{error}");
    }

    #[test]
    fn lifetimes_caps_and_costs_load_and_are_checked() {
        let extra = ", parameters: {Size: '3'}, default_ttl_minutes: 240, max_ttl_minutes: 720, \
            max_concurrent_runs: {test: 2}, instances: [{type_parameter: Color}, {type_parameter: Color, \
            count_parameter: Size}], monthly_budget_usd: 250.5";
        let prices = |yaml: String| yaml.replace("t.big: 2.0", "red: 0.5, blue: 1.5, t.big: 2.0");
        let catalog = Catalog::from_yaml(
            &prices(format!("profiles:\n{}{PLANS}", profile("[a]", extra))),
            &[("t.yaml", TEMPLATE)],
        )
        .unwrap();
        let loaded = catalog.profile_for(&name("a")).unwrap();
        assert_eq!(loaded.default_ttl, Some(SignedDuration::from_hours(4)));
        assert_eq!(loaded.max_ttl, Some(SignedDuration::from_hours(12)));
        assert_eq!(
            (loaded.max_concurrent_runs.of(RunKind::Test), loaded.max_concurrent_runs.of(RunKind::Build)),
            (Some(2), None)
        );
        assert_eq!(loaded.monthly_budget_usd, Some(250.5));
        // The template's default colour (red, 0.5) once, and per Size (3 from the profile).
        assert_eq!(loaded.hourly_cost(&BTreeMap::new(), catalog.prices()), Some(2.0));
        // The stack's own values win; a type without a price has no cost.
        let stack = BTreeMap::from([("Color".to_owned(), "blue".to_owned()), ("Size".to_owned(), "1".to_owned())]);
        assert_eq!(loaded.hourly_cost(&stack, catalog.prices()), Some(3.0));
        let unpriced = BTreeMap::from([("Color".to_owned(), "green".to_owned())]);
        assert_eq!(loaded.hourly_cost(&unpriced, catalog.prices()), None);

        let cases = [
            (", default_ttl_minutes: 5", "use 10 to 10080"),
            (", max_ttl_minutes: 20000", "use 10 to 10080"),
            (", default_ttl_minutes: 800, max_ttl_minutes: 720", "beyond its max_ttl_minutes"),
            (", max_concurrent_runs: {build: 0}", "caps runs at 0"),
            (", instances: [{type_parameter: Nope}]", "does not declare"),
            (", instances: [{type_parameter: Size}]", "price table"),
            (", runner: {instance_types: [x9.huge]}", "price table"),
            (", monthly_budget_usd: -1", "monthly budget of -1 USD"),
            (", monthly_budget_usd: .nan", "monthly budget of NaN USD"),
        ];
        for (extra, reason) in cases {
            let yaml = format!("profiles:\n{}", profile("[a]", &format!(", parameters: {{Size: '1'}}{extra}")));
            let error = load(&yaml).unwrap_err();
            assert!(error.to_string().contains(reason), "{extra}: {error}");
        }
    }

    #[test]
    fn the_shipped_profiles_set_lifetimes_price_their_clusters_and_budget() {
        let catalog = Catalog::shipped().unwrap();
        for profile in catalog.profiles() {
            let (default, max) = (profile.default_ttl.unwrap(), profile.max_ttl.unwrap());
            assert!(default <= max && max <= SignedDuration::from_hours(12), "{}", profile.name);
            let cost = profile.hourly_cost(&BTreeMap::new(), catalog.prices()).unwrap();
            assert!(cost > 0.0, "{}", profile.name);
            // A budget that a month of one cluster alone would not reach.
            let budget = profile.monthly_budget_usd.unwrap();
            assert!(budget > cost * 24.0 * 31.0, "{}: {budget} for {cost}/h", profile.name);
        }
    }

    #[test]
    fn bad_catalogs_are_refused_with_the_reason() {
        let one = |extra: &str| format!("profiles:\n{}", profile("[a]", extra));
        let cases = [
            ("profiles: []\n".to_owned(), "no profiles"),
            (one(", parameters: {Size: '1'}, extra: 1"), "unknown field"),
            (one(", parameters: {Size: '1'}").replace("t.yaml", "missing.yaml"), "not shipped"),
            (format!("profiles:\n{}", profile("['*']", ", parameters: {Size: '1'}")), "catch-all"),
            (format!("profiles:\n{}", profile("['A*']", ", parameters: {Size: '1'}")), "pattern"),
            (format!("profiles:\n{}", profile("[]", ", parameters: {Size: '1'}")), "matches no names"),
            (one(""), "requires"),
            (one(", parameters: {Size: '1', Nope: x}"), "does not declare"),
            (one(", parameters: {Size: '1', ClusterName: x}"), "provisioner sets"),
            (one(", parameters: {Size: '1', Version: x}"), "provisioner sets"),
            (one(", parameters: {Size: '1', Domain: x}"), "provisioner sets"),
            (one(", parameters: {Size: '1'}").replace("version: latest", "version: release/5.x"), "default version"),
            (one(", parameters: {Size: '1'}").replace("images: [sliderule]", "images: []"), "image repositories"),
            (
                one(", parameters: {Size: '1'}").replace("images: [sliderule]", "images: ['Bad Name']"),
                "image repositories",
            ),
            (
                format!(
                    "profiles:\n{}{}",
                    profile("[a]", ", parameters: {Size: '1'}"),
                    profile("[b]", ", parameters: {Size: '1'}")
                ),
                "twice",
            ),
        ];
        for (yaml, reason) in cases {
            let error = load(&yaml).unwrap_err();
            assert!(error.to_string().contains(reason), "{yaml}: {error}");
        }
    }
}
