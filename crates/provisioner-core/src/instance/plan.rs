//! Plans: the named steps a TEST or BUILD instance runs, and the repository layouts it tells apart,
//! kept in the catalog so a new layout of the SlideRule repository is a catalog change, not a code
//! change.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The step every plan starts with: clone the repository, check out the version, detect its layout.
pub const CHECKOUT_STEP: &str = "checkout";

/// Where a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepPlace {
    /// On the instance.
    #[default]
    Host,
    /// Inside the SlideRule build-environment container, with the repository mounted at the same
    /// path and the data directory at `/data`.
    Container,
}

/// What the runner image has to do with a TEST step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageRole {
    /// The runner image run runs it, and a TEST run launched from the image skips it as passed:
    /// what it makes (host tools, the build-environment image) is on the image's disk.
    Holds,
    /// Only the runner image run runs it (it warms caches the TEST steps then find).
    Only,
    /// The runner image run runs it, and so does every TEST run, never held: what it makes may
    /// have changed since (the image keeps no registry login; a tag such as `:latest` moves), and
    /// on the image it is quick (a pull of what is there fetches no layer).
    Also,
}

/// What makes a step not applicable to the checked-out version, besides a missing component.
/// Paths are relative to the step's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum Condition {
    /// `{missing: PATH, reason}`: the path does not exist.
    Missing { missing: String, reason: String },
    /// `{path: PATH, matches: REGEX, reason}`: a file under the path matches the extended regular
    /// expression.
    Matches { path: String, matches: String, reason: String },
}

impl Condition {
    pub fn reason(&self) -> &str {
        match self {
            Condition::Missing { reason, .. } | Condition::Matches { reason, .. } => reason,
        }
    }
}

/// One named step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Lowercase words joined by '-'; reported and logged under this name.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]{0,47}$"))]
    pub name: String,
    /// Bash commands, run with `set -euo pipefail` in the step's directory. They may use $CLUSTER,
    /// $ORGANIZATION, $VERSION, $IMAGE_TAG, $COMMIT, $DOMAIN, $REGION, $REGISTRY, $BUILD_IMAGE,
    /// $PROJECT_BUCKET, $PROJECT_FOLDER, $LAYOUT, $REPO_DIR, $WORK_DIR, $DATA_DIR, $CONDA_DIR,
    /// $LOG_DIR, $STEP (its name), $RESULTS_FILE (see `results`), $HOME (the step user's, for a host
    /// step not run as root) and $IMAGE_HOLDS (on a
    /// runner image: what it holds, as `KEY=VALUE` lines), and the function `build_image_digest`.
    pub run: String,
    #[serde(default)]
    pub place: StepPlace,
    /// Steps that must pass first; when one failed or was skipped this step is skipped, and when
    /// one is not applicable so is this step. Independent steps run even after a failure.
    #[serde(default)]
    pub needs: Vec<String>,
    /// The component of the layout the step runs in (`server`, `ams`, ...); the step is not
    /// applicable when the checked-out version has no such directory. Without it, the step runs at
    /// the repository's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// Further reasons the step does not apply to the checked-out version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_applicable_if: Vec<Condition>,
    /// The step gets SLIDERULE_GITHUB_TOKEN, read from Secrets Manager when it starts and given to
    /// it alone (never written to the script, the record or a log).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub github_token: bool,
    /// Runs as root with the instance role's credentials: for the provisioner's own commands that
    /// need them (packages, the Docker daemon, the registry, the project bucket), never for the
    /// repository's code. Every other step runs as the unprivileged step user, walled off from the
    /// metadata service (and so the role).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub root: bool,
    /// TEST steps only: while the step runs, the metadata service the step user reaches (the
    /// runtime's stand-in) answers with the TEST step role, which reads the public data and project
    /// buckets and the selftests' `localhost/*` secrets, and nothing else.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cloud_data: bool,
    /// TEST steps only: whether the runner image holds what the step makes, or only its run
    /// runs the step. A step the image holds may need only steps it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRole>,
    /// For a step the runner image holds: bash that proves, on an instance booted from the
    /// image, that what the step makes is there; when it fails, the step runs. Required: no step
    /// is reported held without a check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_check: Option<String>,
    /// TEST steps only: the format of the report the step's test suite writes, which the run reads
    /// per test (counts and failing ids) and uploads beside the step's log. `junit`: pytest's, to
    /// which the runtime points every pytest the step runs (`PYTEST_ADDOPTS`); `jest`: jest's JSON,
    /// which the step writes to `$RESULTS_FILE` (`--json --outputFile "$RESULTS_FILE"`);
    /// `selftest`: the Lua selftests' summary in the step's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<ResultsFormat>,
}

/// The report format of a step's test suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResultsFormat {
    Junit,
    Jest,
    Selftest,
}

impl ResultsFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultsFormat::Junit => "junit",
            ResultsFormat::Jest => "jest",
            ResultsFormat::Selftest => "selftest",
        }
    }
}

/// The steps of one kind of run, in order, after the checkout, and how many run side by side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// How many steps run at once at most: a step starts as soon as every step it needs has
    /// ended, in the plan's order among those ready (1: one after another).
    #[serde(default = "one_at_a_time")]
    #[schemars(range(min = 1, max = 16))]
    pub parallelism: u32,
    pub steps: Vec<Step>,
}

fn one_at_a_time() -> u32 {
    1
}

/// The most steps a plan may run at once.
pub const MAX_PARALLELISM: u32 = 16;

/// One layout the SlideRule repository has had: how to recognise it in a checkout, and where each
/// component lives in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// A short name, recorded in the run and its response.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"))]
    pub name: String,
    /// Which versions have it.
    #[serde(default)]
    pub description: String,
    /// Paths that all exist in a checkout of this layout.
    #[schemars(length(min = 1))]
    pub present: Vec<String>,
    /// Paths that do not exist in a checkout of this layout.
    #[serde(default)]
    pub absent: Vec<String>,
    /// Component name to directory. A component a layout does not name, or whose directory the
    /// checkout lacks, makes the steps that run in it not applicable.
    pub components: BTreeMap<String, String>,
}

/// A path relative to the repository: no leading '/', no '..', nothing a shell would interpret.
pub fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 200
        && !path.starts_with('/')
        && !path.starts_with('-')
        && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
}

fn is_component_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks the layouts, so a bad catalog fails when it loads; returns every component they name.
pub fn check_layouts(layouts: &[Layout]) -> Result<BTreeSet<String>, Error> {
    let bad = |why: String| Error::invalid(format!("the repository layouts are invalid: {why}"));
    if layouts.is_empty() {
        return Err(bad("there are none".into()));
    }
    let mut names = BTreeSet::new();
    let mut components = BTreeSet::new();
    for layout in layouts {
        let name = layout.name.as_str();
        let well_formed = !name.is_empty()
            && name.len() <= 32
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !well_formed {
            return Err(bad(format!("layout name '{name}' is not letters, digits, '_', '.' or '-'")));
        }
        if !names.insert(name) {
            return Err(bad(format!("layout '{name}' appears twice")));
        }
        if layout.present.is_empty() {
            return Err(bad(format!("layout '{name}' names no path that identifies it")));
        }
        for path in layout.present.iter().chain(&layout.absent).chain(layout.components.values()) {
            if !is_relative_path(path) {
                return Err(bad(format!(
                    "layout '{name}' has path '{path}'; use a relative path of letters, digits, '.', '_', '-'"
                )));
            }
        }
        for component in layout.components.keys() {
            if !is_component_name(component) {
                return Err(bad(format!(
                    "layout '{name}' has component '{component}'; use lowercase words joined by '_'"
                )));
            }
            components.insert(component.clone());
        }
    }
    Ok(components)
}

impl Step {
    /// A step that runs `run` at the repository's root, with no condition and no token.
    pub fn command(name: &str, run: &str, place: StepPlace, needs: &[&str]) -> Step {
        Step {
            name: name.into(),
            run: run.into(),
            place,
            needs: needs.iter().map(|s| s.to_string()).collect(),
            component: None,
            not_applicable_if: Vec::new(),
            github_token: false,
            root: false,
            cloud_data: false,
            image: None,
            held_check: None,
            results: None,
        }
    }
}

/// A step's name (lowercase words, once, not the checkout's), its command, and needs that come earlier.
fn check_form(step: &Step, earlier: &BTreeSet<&str>) -> Result<(), String> {
    let name = step.name.as_str();
    let well_formed = name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !well_formed {
        return Err(format!("step name '{name}' is not lowercase words joined by '-'"));
    }
    if earlier.contains(name) {
        return Err(format!("step '{name}' appears twice (or is the built-in checkout)"));
    }
    if step.run.trim().is_empty() || step.run.contains('\0') {
        return Err(format!("step '{name}' has no command"));
    }
    match step.needs.iter().find(|need| !earlier.contains(need.as_str())) {
        Some(need) => Err(format!("step '{name}' needs '{need}', which is not an earlier step")),
        None => Ok(()),
    }
}

/// What a step is given and where it runs: the token and cloud data on the host as the step user,
/// root on the host with neither, cloud data in TEST alone, in a component some layout names.
fn check_privileges(step: &Step, what: &str, components: &BTreeSet<String>) -> Result<(), String> {
    let name = &step.name;
    if step.github_token && step.place != StepPlace::Host {
        return Err(format!("step '{name}' runs in the container, where the GitHub token is not given"));
    }
    if step.root && step.place != StepPlace::Host {
        return Err(format!("step '{name}' runs in the container: it cannot run as the instance's root"));
    }
    if step.root && (step.github_token || step.cloud_data) {
        return Err(format!("step '{name}' runs as root, which is given no secret and no step credentials"));
    }
    if step.cloud_data && what != "test" {
        return Err(format!("step '{name}' reads cloud data, which only TEST steps are given"));
    }
    if step.results.is_some() && (what != "test" || step.root) {
        return Err(format!("step '{name}' reports test results, which only TEST steps of the step user do"));
    }
    if step.place == StepPlace::Container && matches!(step.results, Some(ResultsFormat::Junit | ResultsFormat::Jest)) {
        return Err(format!("step '{name}' runs in the container, where its suite's report file is not given"));
    }
    match &step.component {
        Some(component) if !components.contains(component) => {
            Err(format!("step '{name}' runs in component '{component}', which no layout names"))
        }
        _ => Ok(()),
    }
}

/// Each condition on a relative path, with a one-line pattern and reason.
fn check_conditions(step: &Step) -> Result<(), String> {
    let name = &step.name;
    for condition in &step.not_applicable_if {
        let (path, pattern) = match condition {
            Condition::Missing { missing, .. } => (missing, None),
            Condition::Matches { path, matches, .. } => (path, Some(matches)),
        };
        if !is_relative_path(path) {
            return Err(format!("step '{name}' has a condition on path '{path}', which is not a relative path"));
        }
        let printable =
            |text: &str| !text.trim().is_empty() && text.len() <= 300 && !text.chars().any(char::is_control);
        if pattern.is_some_and(|p| !printable(p)) || !printable(condition.reason()) {
            return Err(format!("step '{name}' has a condition without a one-line pattern and reason"));
        }
    }
    Ok(())
}

impl Plan {
    /// Checks names, order, commands and the components steps run in, so a bad plan fails when
    /// the catalog loads.
    pub fn check(&self, what: &str, components: &BTreeSet<String>) -> Result<(), Error> {
        let bad = |why: String| Error::invalid(format!("the {what} plan is invalid: {why}"));
        if self.steps.is_empty() {
            return Err(bad("it has no steps".into()));
        }
        if !(1..=MAX_PARALLELISM).contains(&self.parallelism) {
            return Err(bad(format!("its parallelism is {}; use 1 to {MAX_PARALLELISM}", self.parallelism)));
        }
        let mut earlier: BTreeSet<&str> = BTreeSet::from([CHECKOUT_STEP]);
        for step in &self.steps {
            check_form(step, &earlier).map_err(bad)?;
            check_privileges(step, what, components).map_err(bad)?;
            self.check_image_role(step).map_err(bad)?;
            check_conditions(step).map_err(bad)?;
            earlier.insert(step.name.as_str());
        }
        Ok(())
    }

    /// A step of the runner image needs only steps the image holds; a TEST step needs no step only
    /// the image run runs; a held step says how to check it is held.
    fn check_image_role(&self, step: &Step) -> Result<(), String> {
        let name = &step.name;
        let image_step = |need: &String| self.steps.iter().find(|s| &s.name == need).and_then(|s| s.image);
        for need in step.needs.iter().filter(|need| *need != CHECKOUT_STEP) {
            match (step.image, image_step(need)) {
                (Some(_), Some(ImageRole::Holds | ImageRole::Also))
                | (None, None | Some(ImageRole::Holds | ImageRole::Also)) => {}
                (Some(_), _) => {
                    return Err(format!(
                        "step '{name}' is the runner image's, and needs '{need}', which the image does not hold"
                    ))
                }
                (None, Some(ImageRole::Only)) => {
                    return Err(format!("step '{name}' needs '{need}', which only the runner image run runs"))
                }
            }
        }
        match (step.image, &step.held_check) {
            (Some(ImageRole::Holds), None) => {
                Err(format!("step '{name}' is held by the runner image but has no held_check"))
            }
            (Some(ImageRole::Holds), Some(_)) | (_, None) => Ok(()),
            (_, Some(_)) => Err(format!("step '{name}' has a held_check but the image does not hold it")),
        }
    }

    /// A plan of `steps` run one after another.
    pub fn new(steps: Vec<Step>) -> Plan {
        Plan { parallelism: 1, steps }
    }

    /// The plan a run carries out: without the steps only the runner image run runs.
    pub fn for_runs(&self) -> Plan {
        let steps = self.steps.iter().filter(|step| step.image != Some(ImageRole::Only)).cloned().collect();
        Plan { parallelism: self.parallelism, steps }
    }

    /// The runner image run's plan: the steps the image holds and those only it runs.
    pub fn for_runner_image(&self) -> Plan {
        let steps = self.steps.iter().filter(|step| step.image.is_some()).cloned().collect();
        Plan { parallelism: self.parallelism, steps }
    }

    /// The first 16 hex digits of a SHA-256 of the steps: an image made by a plan of another
    /// hash may not hold what this one's steps make.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = serde_json::to_string(&self.steps).unwrap_or_default();
        Sha256::digest(text.as_bytes()).iter().take(8).map(|byte| format!("{byte:02x}")).collect()
    }

    /// Every step name the instance will report, checkout first.
    pub fn step_names(&self) -> Vec<String> {
        std::iter::once(CHECKOUT_STEP.to_owned()).chain(self.steps.iter().map(|s| s.name.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn step(name: &str, needs: &[&str]) -> Step {
        Step::command(name, "true", StepPlace::Host, needs)
    }

    fn components() -> BTreeSet<String> {
        BTreeSet::from(["server".to_owned()])
    }

    fn layout(name: &str) -> Layout {
        Layout {
            name: name.into(),
            description: String::new(),
            present: vec!["targets/slideruleearth".into()],
            absent: vec![],
            components: BTreeMap::from([("server".to_owned(), "targets/slideruleearth".to_owned())]),
        }
    }

    #[test]
    fn a_plan_names_its_steps_after_the_checkout() {
        let plan = Plan::new(vec![step("build", &["checkout"]), step("selftest", &["build"])]);
        plan.check("test", &components()).unwrap();
        assert_eq!(plan.step_names(), vec!["checkout", "build", "selftest"]);
    }

    #[test]
    fn bad_plans_are_refused() {
        let missing = |path: &str| Condition::Missing { missing: path.into(), reason: "none here".into() };
        let cases = [
            (Plan::new(vec![]), "no steps"),
            (Plan::new(vec![step("Build", &[])]), "lowercase"),
            (Plan::new(vec![step("a;b", &[])]), "lowercase"),
            (Plan::new(vec![step("checkout", &[])]), "twice"),
            (Plan::new(vec![step("a", &[]), step("a", &[])]), "twice"),
            (Plan::new(vec![step("a", &["b"]), step("b", &[])]), "not an earlier step"),
            (Plan::new(vec![Step { run: "  ".into(), ..step("a", &[]) }]), "no command"),
            (Plan::new(vec![Step { component: Some("srever".into()), ..step("a", &[]) }]), "no layout names"),
            (Plan::new(vec![Step { not_applicable_if: vec![missing("../etc")], ..step("a", &[]) }]), "relative path"),
            (Plan::new(vec![Step { not_applicable_if: vec![missing("$(id)")], ..step("a", &[]) }]), "relative path"),
            (
                Plan::new(vec![Step {
                    not_applicable_if: vec![Condition::Matches {
                        path: "a".into(),
                        matches: "x\ny".into(),
                        reason: "r".into(),
                    }],
                    ..step("a", &[])
                }]),
                "one-line",
            ),
            (Plan::new(vec![Step { image: Some(ImageRole::Holds), ..step("a", &[]) }]), "has no held_check"),
            (Plan::new(vec![Step { github_token: true, place: StepPlace::Container, ..step("a", &[]) }]), "not given"),
            (Plan::new(vec![Step { root: true, place: StepPlace::Container, ..step("a", &[]) }]), "instance's root"),
            (Plan::new(vec![Step { root: true, github_token: true, ..step("a", &[]) }]), "no secret"),
            (Plan::new(vec![Step { root: true, cloud_data: true, ..step("a", &[]) }]), "no secret"),
            (Plan::new(vec![Step { held_check: Some("true".into()), ..step("a", &[]) }]), "does not hold it"),
            (
                Plan::new(vec![
                    Step { image: Some(ImageRole::Only), ..step("a", &[]) },
                    Step { image: Some(ImageRole::Also), ..step("b", &[]) },
                    step("c", &["b"]),
                    step("d", &["a"]),
                ]),
                "which only the runner image run runs",
            ),
            (Plan { parallelism: 0, ..Plan::new(vec![step("a", &[])]) }, "parallelism is 0"),
            (Plan { parallelism: 17, ..Plan::new(vec![step("a", &[])]) }, "use 1 to 16"),
        ];
        for (plan, reason) in cases {
            let error = plan.check("test", &components()).unwrap_err();
            assert!(error.to_string().contains(reason), "{error}");
        }
        let cloud = Plan::new(vec![Step { cloud_data: true, ..step("a", &[]) }]);
        cloud.check("test", &components()).unwrap();
        let error = cloud.check("build", &components()).unwrap_err();
        assert!(error.to_string().contains("only TEST steps"), "{error}");
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert_eq!(check_layouts(&[layout("D")]).unwrap(), components());
        let cases: [(Vec<Layout>, &str); 5] = [
            (vec![], "none"),
            (vec![layout("D"), layout("D")], "twice"),
            (vec![Layout { present: vec![], ..layout("D") }], "identifies"),
            (vec![Layout { absent: vec!["/etc".into()], ..layout("D") }], "relative path"),
            (vec![Layout { components: BTreeMap::from([("Server".into(), "x".into())]), ..layout("D") }], "lowercase"),
        ];
        for (layouts, reason) in cases {
            let error = check_layouts(&layouts).unwrap_err();
            assert!(error.to_string().contains(reason), "{error}");
        }
    }
}
