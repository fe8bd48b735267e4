//! Renders an instance's user-data from a plan. Every value that reaches the script is checked
//! against a narrow pattern and single-quoted; step commands and layouts come from the reviewed
//! catalog. The script holds no secret: the instance's role reads the one secret a step needs when
//! that step starts.

use super::plan::{Condition, ImageRole, Layout, Plan, StepPlace, CHECKOUT_STEP};
use crate::domain::names::{shown, ClusterName, GitRef};
use crate::domain::{RunId, RunKind};
use crate::error::Error;
use crate::settings::RunSettings;

/// What a run's script is told: the run, and the account's settings of runs (of which the
/// script uses the region, table, buckets, repository, images, domain and secret name; the
/// instance profile, subnets and groups are the launch's).
#[derive(Debug, Clone)]
pub struct RunValues {
    pub run_id: RunId,
    pub kind: RunKind,
    pub cluster: ClusterName,
    pub version: GitRef,
    /// The Docker tag the version's images carry; empty when the version names none (TEST only).
    pub image_tag: String,
    /// Which attempt of the run the instance carries out: every report is conditioned on it, so
    /// an instance whose attempt ended cannot write over the next.
    pub attempt: u32,
    /// The deadman: the instance powers off (and so terminates) this many minutes after boot.
    pub time_limit_minutes: u32,
    /// A failed run keeps its instance up this long after its last step (0: it powers off).
    pub hold_minutes: u32,
    /// The runner image the instance boots from: the steps it holds are passed at once.
    pub runner_image: Option<String>,
    pub settings: RunSettings,
}

/// Wraps `value` in single quotes for bash; a quote inside becomes `'\''`.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn check(name: &str, value: &str, allowed: fn(char) -> bool, max: usize) -> Result<(), Error> {
    if value.is_empty() || value.len() > max || !value.chars().all(allowed) || value.starts_with('-') {
        return Err(Error::invalid(format!("the {name} {} cannot be given to a run", shown(value))));
    }
    Ok(())
}

fn check_optional(name: &str, value: &str, allowed: fn(char) -> bool, max: usize) -> Result<(), Error> {
    if value.is_empty() {
        return Ok(());
    }
    check(name, value, allowed, max)
}

/// What each value may hold: its characters, and its longest.
mod allowed {
    pub fn id(c: char) -> bool {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    }
    pub fn region(c: char) -> bool {
        id(c)
    }
    pub fn aws_name(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
    }
    pub fn bucket(c: char) -> bool {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.')
    }
    pub fn url(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '.' | '-' | '_')
    }
    pub fn image(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '.' | '-' | '_' | '@')
    }
    pub fn host(c: char) -> bool {
        bucket(c)
    }
    pub fn folder(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
    }
    pub fn secret(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '+' | '=' | '.' | '@' | ':' | '-')
    }
    /// An IAM role ARN: a path and name of letters, digits and `+=,.@_-`.
    pub fn role_arn(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '_' | '+' | '=' | ',' | '.' | '@' | '-')
    }
    pub fn tag(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
    }
    pub const RUN_ID: usize = 100;
    pub const REGION: usize = 32;
    pub const AWS_NAME: usize = 255;
    pub const BUCKET: usize = 63;
    pub const URL: usize = 200;
    pub const IMAGE: usize = 255;
    pub const HOST: usize = 253;
    pub const TAG: usize = 128;
    /// `ami-` and 8 or 17 hex digits.
    pub fn is_image_id(id: &str) -> bool {
        id.strip_prefix("ami-")
            .is_some_and(|hex| matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    }
    pub const FOLDER: usize = 200;
    /// A secret's ARN: its prefix, a name of at most 512 characters and AWS's 7-character suffix.
    pub const SECRET: usize = 600;
    /// `arn:aws:iam::ACCOUNT:role/` and a role's name (at most 64 characters) under a short path.
    pub const ROLE_ARN: usize = 200;
    pub const TIME_LIMIT_MINUTES: u32 = 24 * 60;
    pub const MAX_ATTEMPT: u32 = 99;
}

impl RunValues {
    /// Checks every value against what it may hold, whatever its source.
    /// The run id, kind, cluster and version are valid by their types.
    pub fn check(&self) -> Result<(), Error> {
        use allowed::*;
        let settings = &self.settings;
        check("region", &settings.region, region, REGION)?;
        check("table", &settings.table, aws_name, AWS_NAME)?;
        check("log bucket", &settings.log_bucket, bucket, BUCKET)?;
        check("repository", &settings.repository, url, URL)?;
        if !settings.repository.starts_with("https://") {
            return Err(Error::invalid(format!(
                "the repository {} is not an https:// URL",
                shown(&settings.repository)
            )));
        }
        check("build image", &settings.build_image, image, IMAGE)?;
        check("registry", &settings.registry, image, IMAGE)?;
        check("domain", &settings.domain, host, HOST)?;
        check_optional("image tag", &self.image_tag, tag, TAG)?;
        if self.image_tag.starts_with('.') {
            return Err(Error::invalid(format!("the image tag {} cannot start with '.'", shown(&self.image_tag))));
        }
        check_optional("project bucket", &settings.project_bucket, bucket, BUCKET)?;
        check_optional("project folder", &settings.project_folder, folder, FOLDER)?;
        if settings.project_folder.split('/').any(|part| part == "..") {
            return Err(Error::invalid(format!(
                "the project folder {} cannot hold '..'",
                shown(&settings.project_folder)
            )));
        }
        if let Some(name) = &settings.github_token_secret {
            check("GitHub token secret", name, secret, SECRET)?;
        }
        if let Some(arn) = &settings.step_role_arn {
            check("step role", arn, role_arn, ROLE_ARN)?;
            if !arn.starts_with("arn:") {
                return Err(Error::invalid(format!("the step role {} is not a role ARN", shown(arn))));
            }
        }
        if self.time_limit_minutes == 0 || self.time_limit_minutes > TIME_LIMIT_MINUTES {
            return Err(Error::invalid("the run's time limit must be between 1 minute and 24 hours"));
        }
        if self.hold_minutes > crate::domain::run::MAX_HOLD_MINUTES {
            return Err(Error::invalid("a run's instance is held at most 240 minutes"));
        }
        if let Some(image) = self.runner_image.as_deref().filter(|image| !is_image_id(image)) {
            return Err(Error::invalid(format!("the runner image {} is not an AMI id", shown(image))));
        }
        if self.attempt == 0 || self.attempt > MAX_ATTEMPT {
            return Err(Error::invalid(format!("a run has attempts 1 to {MAX_ATTEMPT}")));
        }
        Ok(())
    }
}

/// Values of a `kind` run at the longest [`RunValues::check`] and the run id allow, each of
/// random allowed characters (which compress least), starting as each must: what the user-data
/// budget is measured against (the tests and `make bench`). The cluster and version are short
/// ones; callers lengthen them to what their parsers allow.
pub fn longest_values(kind: RunKind) -> RunValues {
    use allowed::*;
    let mut rng = fastrand::Rng::with_seed(2026);
    let mut text = |prefix: &str, allowed: fn(char) -> bool, len: usize| -> String {
        // No '.' or '-' after the prefix: no value may start with '-', a tag with '.', a folder hold "..".
        let alphabet: Vec<char> = (' '..='~').filter(|&c| allowed(c) && c != '.' && c != '-').collect();
        let mut value = prefix.to_owned();
        while value.len() < len {
            value.push(alphabet[rng.usize(..alphabet.len())]);
        }
        value
    };
    RunValues {
        run_id: RunId::parse(&text(kind.id_prefix(), id, RUN_ID)).expect("a valid run id"),
        kind,
        cluster: ClusterName::parse("c").expect("a valid name"),
        version: GitRef::parse("v").expect("a valid ref"),
        image_tag: text("", tag, TAG),
        attempt: MAX_ATTEMPT,
        time_limit_minutes: TIME_LIMIT_MINUTES,
        hold_minutes: crate::domain::run::MAX_HOLD_MINUTES,
        runner_image: None,
        settings: RunSettings {
            region: text("", region, REGION),
            table: text("", aws_name, AWS_NAME),
            log_bucket: text("", bucket, BUCKET),
            repository: text("https://", url, URL),
            build_image: text("", image, IMAGE),
            registry: text("", image, IMAGE),
            domain: text("", host, HOST),
            project_bucket: text("", bucket, BUCKET),
            project_folder: text("", folder, FOLDER),
            github_token_secret: Some(text("", secret, SECRET)),
            step_role_arn: Some(text("arn:aws:iam::", role_arn, ROLE_ARN)),
            test_instance_profile: None,
            build_instance_profile: None,
            subnets: Vec::new(),
            security_groups: Vec::new(),
            runner_roles: Default::default(),
        },
    }
}

/// The bash user-data of a run: the deadman, the run's values, the fixed runtime, the layouts,
/// then one `run_step` line per step of the plan after the checkout.
pub fn render(plan: &Plan, layouts: &[Layout], values: &RunValues) -> Result<String, Error> {
    let components = super::plan::check_layouts(layouts)?;
    plan.check(values.kind.as_str(), &components)?;
    values.check()?;
    let mut script = header(values);
    script.push_str(&variables(values));
    script.push_str(&runtime());
    script.push('\n');
    script.push_str(&render_layouts(layouts));
    script.push('\n');
    script.push_str(&steps(plan, values.runner_image.is_some()));
    Ok(script)
}

/// The shebang, what the script is, and the deadman before anything else.
fn header(values: &RunValues) -> String {
    format!(
        "#!/bin/bash\n\
         # Step commands are single-quoted on purpose: they expand when the step runs.\n\
         # shellcheck disable=SC2016\n\
         # SlideRule Provisioner {} run {}: rendered from a plan of named steps. Holds no secrets.\n\
         # The deadman comes first: whatever happens below, the instance powers off, and so terminates\n\
         # (its time limit, plus the hold a failed run may keep it for).\n\
         shutdown -h +{}\n\
         # A shutdown signal from then on is the time limit, not a spot interruption.\n\
         LIMIT_AT=$(($(date +%s) + ${{PROVISIONER_LIMIT_SECONDS:-{}}}))\n\
         set -u -o pipefail\n\n",
        values.kind,
        values.run_id,
        values.time_limit_minutes + values.hold_minutes,
        values.time_limit_minutes * 60
    )
}

/// The run's values as exported shell variables, each single-quoted.
fn variables(values: &RunValues) -> String {
    let settings = &values.settings;
    let secret = settings.github_token_secret.as_deref().unwrap_or("");
    let attempt = values.attempt.to_string();
    let hold = values.hold_minutes.to_string();
    let assigned = [
        ("RUN_ID", values.run_id.as_str()),
        ("KIND", values.kind.as_str()),
        ("ATTEMPT", attempt.as_str()),
        ("HOLD_MINUTES", hold.as_str()),
        ("CLUSTER", values.cluster.as_str()),
        ("ORGANIZATION", values.cluster.as_str()),
        ("VERSION", values.version.as_str()),
        ("IMAGE_TAG", values.image_tag.as_str()),
        ("REGION", settings.region.as_str()),
        ("TABLE", settings.table.as_str()),
        ("LOG_BUCKET", settings.log_bucket.as_str()),
        ("REPOSITORY", settings.repository.as_str()),
        ("BUILD_IMAGE", settings.build_image.as_str()),
        ("REGISTRY", settings.registry.as_str()),
        ("DOMAIN", settings.domain.as_str()),
        ("PROJECT_BUCKET", settings.project_bucket.as_str()),
        ("PROJECT_FOLDER", settings.project_folder.as_str()),
        // The secret's name: the token itself is read when a step that needs it starts.
        ("GITHUB_TOKEN_SECRET", secret),
        // The role the steps that read cloud data are given temporary credentials of.
        ("STEP_ROLE_ARN", settings.step_role_arn.as_deref().unwrap_or("")),
        ("RUNNER_IMAGE", values.runner_image.as_deref().unwrap_or("")),
        ("COMMIT", "unknown"),
        ("LAYOUT", "unknown"),
    ];
    let mut text: String = assigned.iter().map(|(name, value)| format!("{name}={}\n", shell_quote(value))).collect();
    let exported: Vec<&str> = assigned
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !matches!(*name, "GITHUB_TOKEN_SECRET" | "STEP_ROLE_ARN"))
        .collect();
    text.push_str(&format!("export {}\n", exported.join(" ")));
    text
}

/// The checkout, then each step of the plan as a function (a `run_step` call with its needs,
/// component, token and conditions) that `run_steps` starts once every step it needs has ended,
/// up to the plan's parallelism at once. On a runner image, a step it holds is passed at once.
fn steps(plan: &Plan, from_runner_image: bool) -> String {
    let q = shell_quote;
    let mut text = format!("STEPS=({})\n", plan.step_names().iter().map(|n| q(n)).collect::<Vec<_>>().join(" "));
    text.push_str(&format!("PARALLELISM={}\n", plan.parallelism));
    text.push_str(
        "trap finish EXIT\ntrap 'exit 143' TERM INT HUP\nrecord_state running\n\
         watch_interruption >/dev/null 2>&1 &\nWATCHER=$!\n\n",
    );
    let checkout = concat!(
        r#"git clone --quiet "$REPOSITORY" "$REPO_DIR" && cd "$REPO_DIR" && "#,
        r#"git -c advice.detachedHead=false checkout --quiet "$VERSION" && "#,
        r#"git rev-parse HEAD > "$LOG_DIR/commit" && detect_layout > "$LOG_DIR/layout""#
    );
    text.push_str(&format!("run_step {} root '' '' '' {}\nread_checkout\n\n", q(CHECKOUT_STEP), q(checkout)));
    for (index, step) in plan.steps.iter().enumerate() {
        let held = from_runner_image && step.image == Some(ImageRole::Holds);
        text.push_str(&format!(
            "NEEDS[{name}]={needs}\nSTEP_FUNCTIONS[{name}]=step_{index}\nstep_{index}() {{\n{call}\n}}\n",
            name = q(&step.name),
            needs = q(&needs_of(step)),
            call = match (held, &step.held_check) {
                (true, Some(check)) => format!("held_step {} {} ||\n{}", q(&step.name), q(check), step_call(step)),
                _ => step_call(step),
            },
        ));
    }
    text.push_str("run_steps\n");
    text
}

/// The steps `step` needs, comma-separated: the checkout and those the plan names.
fn needs_of(step: &super::plan::Step) -> String {
    std::iter::once(CHECKOUT_STEP).chain(step.needs.iter().map(String::as_str)).collect::<Vec<_>>().join(",")
}

fn step_call(step: &super::plan::Step) -> String {
    let q = shell_quote;
    let place = match step.place {
        StepPlace::Host if step.root => "root",
        StepPlace::Host => "host",
        StepPlace::Container => "container",
    };
    // What the step is given beyond the run's values.
    let results = step.results.map(|format| format!("results:{}", format.as_str()));
    let given: Vec<&str> = [(step.github_token, "token"), (step.cloud_data, "cloud")]
        .into_iter()
        .filter_map(|(given, word)| given.then_some(word))
        .chain(results.as_deref())
        .collect();
    let mut call = format!(
        "run_step {} {} {} {} {} {}",
        q(&step.name),
        place,
        q(&needs_of(step)),
        q(step.component.as_deref().unwrap_or("")),
        q(&given.join(",")),
        q(&step.run)
    );
    for condition in &step.not_applicable_if {
        let (kind, path, pattern) = match condition {
            Condition::Missing { missing, .. } => ("missing", missing, ""),
            Condition::Matches { path, matches, .. } => ("matches", path, matches.as_str()),
        };
        call.push_str(&format!(" \\\n  {kind} {} {} {}", q(path), q(pattern), q(condition.reason())));
    }
    call
}

/// `detect_layout`, which prints the first layout whose paths a checkout has, and `load_layout`,
/// which sets the component directories of a layout.
fn render_layouts(layouts: &[Layout]) -> String {
    let q = shell_quote;
    let mut detect = String::from(
        "# Which layout the checkout in the current directory has: the first that fits.\ndetect_layout() {\n",
    );
    let mut load = String::from("# Where each component lives in a layout.\nload_layout() {\n  case $1 in\n");
    for layout in layouts {
        let tests: Vec<String> = layout
            .present
            .iter()
            .map(|p| format!("-e {}", q(p)))
            .chain(layout.absent.iter().map(|p| format!("! -e {}", q(p))))
            .collect();
        detect.push_str(&format!("  if [[ {} ]]; then echo {}; return 0; fi\n", tests.join(" && "), q(&layout.name)));
        let entries: Vec<String> = layout.components.iter().map(|(c, d)| format!("[{}]={}", q(c), q(d))).collect();
        load.push_str(&format!("    {}) COMPONENTS=({}) ;;\n", q(&layout.name), entries.join(" ")));
    }
    let known: Vec<&str> = layouts.iter().map(|l| l.name.as_str()).collect();
    detect.push_str(&format!(
        "  echo \"this checkout fits none of the repository layouts ({}); describe its layout in \
            clusters/catalog.yaml\" >&2\n  return 1\n}}\nexport -f detect_layout\n",
        known.join(", ")
    ));
    load.push_str("    *) COMPONENTS=() ;;\n  esac\n}\n");
    detect + &load
}

/// [`RUNTIME`] as the instance gets it: its full-line comments, for readers of this file, left
/// out, which keeps the user-data well within its budget.
fn runtime() -> String {
    RUNTIME.lines().filter(|line| !line.trim_start().starts_with('#')).flat_map(|line| [line, "\n"]).collect()
}

/// The fixed part of every script: reporting, step running and the exit trap. Reports go to the
/// instance's report (`report#<caller>` in the table, laid out as `table.rs` lists it) and logs
/// under the instance's own prefix ([`crate::domain::attempt::instance_log_location`]).
const RUNTIME: &str = include_str!("runtime.sh");

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::catalog::Catalog;
    use crate::domain::names::{MAX_CLUSTER_NAME_LEN, MAX_GIT_REF_LEN};
    use crate::domain::{UserData, USER_DATA_BUDGET};
    use crate::instance::plan::Step;

    pub fn values() -> RunValues {
        RunValues {
            run_id: RunId::parse("test-ci-1-20261123t120000-ab12").unwrap(),
            kind: RunKind::Test,
            cluster: ClusterName::parse("ci-1").unwrap(),
            version: GitRef::parse("main").unwrap(),
            image_tag: "unstable".into(),
            attempt: 1,
            time_limit_minutes: 120,
            hold_minutes: 0,
            runner_image: None,
            settings: RunSettings {
                region: "us-west-2".into(),
                table: "sliderule-provisioner".into(),
                log_bucket: "sliderule-provisioner-runs".into(),
                repository: "https://github.com/SlideRuleEarth/sliderule.git".into(),
                build_image: "742127912612.dkr.ecr.us-west-2.amazonaws.com/sliderule-buildenv:latest".into(),
                registry: "742127912612.dkr.ecr.us-west-2.amazonaws.com".into(),
                domain: "slideruleearth.io".into(),
                project_bucket: "sliderule".into(),
                project_folder: "cf".into(),
                github_token_secret: Some(
                    "arn:aws:secretsmanager:us-west-2:742127912612:secret:ci/github-token-AbCdEf".into(),
                ),
                step_role_arn: Some("arn:aws:iam::742127912612:role/sliderule-provisioner-test-step".into()),
                test_instance_profile: None,
                build_instance_profile: None,
                subnets: Vec::new(),
                security_groups: Vec::new(),
                runner_roles: Default::default(),
            },
        }
    }

    fn layouts() -> Vec<Layout> {
        vec![Layout {
            name: "D".into(),
            description: String::new(),
            present: vec!["apps".into()],
            absent: vec!["Makefile".into()],
            components: BTreeMap::from([("server".to_owned(), "targets/slideruleearth".to_owned())]),
        }]
    }

    fn step(name: &str, run: &str, place: StepPlace, needs: &[&str]) -> Step {
        Step::command(name, run, place, needs)
    }

    fn plan() -> Plan {
        Plan {
            parallelism: 1,
            steps: vec![
                step("lint", "make lint", StepPlace::Host, &[]),
                Step {
                    component: Some("server".into()),
                    not_applicable_if: vec![Condition::Matches {
                        path: "a".into(),
                        matches: "x'y".into(),
                        reason: "it's old".into(),
                    }],
                    ..step("selftest", "echo 'it''s' && make selftest", StepPlace::Container, &["lint"])
                },
            ],
        }
    }

    #[test]
    fn the_deadman_is_the_first_command() {
        let script = render(&plan(), &layouts(), &values()).unwrap();
        let first_command = script.lines().find(|l| !l.starts_with('#') && !l.trim().is_empty()).unwrap();
        assert_eq!(first_command, "shutdown -h +120");
    }

    #[test]
    fn steps_are_rendered_in_order_with_their_needs_components_conditions_and_quoted_commands() {
        let script = render(&plan(), &layouts(), &values()).unwrap();
        let checkout = script.find("run_step 'checkout' root '' '' ''").unwrap();
        let lint = script.find("run_step 'lint' host 'checkout' '' '' 'make lint'").unwrap();
        let selftest = script
            .find(concat!(
                r#"run_step 'selftest' container 'checkout,lint' 'server' '' "#,
                r#"'echo '\''it'\'''\''s'\'' && make selftest' \"#,
                "\n",
                r#"  matches 'a' 'x'\''y' 'it'\''s old'"#
            ))
            .unwrap();
        assert!(checkout < lint && lint < selftest);
        assert!(script.contains("STEPS=('checkout' 'lint' 'selftest')"));
    }

    #[test]
    fn a_step_is_rendered_with_who_runs_it_and_what_it_is_given() {
        let plan = Plan::new(vec![
            Step { root: true, ..step("tools", "dnf install -y make", StepPlace::Host, &[]) },
            Step { github_token: true, ..step("clients", "pytest", StepPlace::Host, &[]) },
            Step { cloud_data: true, ..step("selftests", "make selftest", StepPlace::Container, &[]) },
        ]);
        let script = render(&plan, &layouts(), &values()).unwrap();
        assert!(script.contains("run_step 'tools' root 'checkout' '' '' 'dnf install -y make'"), "{script}");
        assert!(script.contains("run_step 'clients' host 'checkout' '' 'token' 'pytest'"), "{script}");
        assert!(script.contains("run_step 'selftests' container 'checkout' '' 'cloud' 'make selftest'"), "{script}");
        assert!(script.contains("STEP_ROLE_ARN='arn:aws:iam::742127912612:role/sliderule-provisioner-test-step'\n"));
        assert!(!script.lines().any(|line| line.starts_with("export ") && line.contains("STEP_ROLE_ARN")));
    }

    #[test]
    fn each_step_is_a_function_the_scheduler_starts_when_its_needs_have_ended() {
        let parallel = Plan { parallelism: 3, ..plan() };
        let script = render(&parallel, &layouts(), &values()).unwrap();
        assert!(script.contains("PARALLELISM=3\n"), "{script}");
        // The checkout runs first, by itself; then each step is declared and the scheduler starts them.
        let checkout = script.find("run_step 'checkout' root").unwrap();
        let declared = [
            "NEEDS['lint']='checkout'\nSTEP_FUNCTIONS['lint']=step_0\nstep_0() {\nrun_step 'lint' host",
            "NEEDS['selftest']='checkout,lint'\nSTEP_FUNCTIONS['selftest']=step_1\nstep_1() {\nrun_step 'selftest'",
        ];
        let at: Vec<usize> =
            declared.iter().map(|text| script.find(text).unwrap_or_else(|| panic!("{text}"))).collect();
        let scheduler = script.rfind("\nrun_steps\n").unwrap();
        assert!(checkout < at[0] && at[0] < at[1] && at[1] < scheduler);
        assert!(script.ends_with("run_steps\n"));
    }

    #[test]
    fn layouts_are_detected_from_the_checkout_and_name_their_components() {
        let script = render(&plan(), &layouts(), &values()).unwrap();
        assert!(script.contains("  if [[ -e 'apps' && ! -e 'Makefile' ]]; then echo 'D'; return 0; fi\n"), "{script}");
        assert!(script.contains("    'D') COMPONENTS=(['server']='targets/slideruleearth') ;;\n"), "{script}");
    }

    #[test]
    fn values_are_single_quoted() {
        let script = render(&plan(), &layouts(), &values()).unwrap();
        assert!(script.contains("VERSION='main'\n"));
        assert!(script.contains("IMAGE_TAG='unstable'\n"));
        assert!(script.contains("CLUSTER='ci-1'\n"));
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn values_that_could_reach_a_shell_are_refused() {
        type Spoil = fn(&mut RunValues);
        // A run id, kind, cluster or version cannot hold these: their types refuse them.
        assert!(RunId::parse("x; reboot").is_err());
        let attempts: [(&str, Spoil); 15] = [
            ("region", |v| v.settings.region = "us-west-2$(id)".into()),
            ("table", |v| v.settings.table = "t'b".into()),
            ("log bucket", |v| v.settings.log_bucket = "b`id`".into()),
            ("repository", |v| v.settings.repository = "https://x/$(id)".into()),
            ("repository", |v| v.settings.repository = "file:///etc".into()),
            ("build image", |v| v.settings.build_image = "img;id".into()),
            ("domain", |v| v.settings.domain = "a b".into()),
            ("image tag", |v| v.image_tag = "a/b".into()),
            ("image tag", |v| v.image_tag = ".hidden".into()),
            ("project bucket", |v| v.settings.project_bucket = "B$x".into()),
            ("project folder", |v| v.settings.project_folder = "../x".into()),
            ("secret", |v| v.settings.github_token_secret = Some("x;id".into())),
            ("step role", |v| v.settings.step_role_arn = Some("arn:aws:iam::1:role/$(id)".into())),
            ("step role", |v| v.settings.step_role_arn = Some("role/x".into())),
            ("time limit", |v| v.time_limit_minutes = 0),
        ];
        for (what, spoil) in attempts {
            let mut spoiled = values();
            spoil(&mut spoiled);
            let error = render(&plan(), &layouts(), &spoiled).unwrap_err();
            assert_eq!(error.code(), "InvalidRequest", "{what}");
        }
    }

    /// Every plan of the shipped catalog, rendered for the longest valid cluster name and version
    /// and every setting at the longest its check allows (random characters, which compress least),
    /// stays within the budget.
    #[test]
    fn every_plan_stays_within_the_budget_for_the_longest_values() {
        let catalog = Catalog::shipped().unwrap();
        let plans = catalog.plans();
        for kind in RunKind::ALL {
            let mut values = longest_values(kind);
            values.cluster = ClusterName::parse(&format!("c{}", "x".repeat(MAX_CLUSTER_NAME_LEN - 1))).unwrap();
            values.version = GitRef::parse(&format!("v{}", "1".repeat(MAX_GIT_REF_LEN - 1))).unwrap();
            let script = render(plans.of(kind), &plans.layouts, &values).unwrap();
            let user_data = UserData::compress(&script).unwrap();
            assert!(
                user_data.len() <= USER_DATA_BUDGET,
                "{kind}: {} bytes of user-data ({} raw), over the budget of {USER_DATA_BUDGET}",
                user_data.len(),
                script.len()
            );
        }
    }

    #[test]
    fn the_longest_values_pass_their_checks() {
        for kind in RunKind::ALL {
            let values = longest_values(kind);
            values.check().unwrap();
            let secret = values.settings.github_token_secret.map(|s| s.len());
            assert_eq!((values.run_id.as_str().len(), secret), (100, Some(600)));
        }
    }

    #[test]
    fn no_secret_reaches_the_script() {
        let script = render(&plan(), &layouts(), &values()).unwrap();
        // The runtime names the step credentials' variables, never gives them a value.
        for secret in ["AWS_SECRET_ACCESS_KEY=", "AWS_SESSION_TOKEN=", "aws_secret", "password="] {
            assert!(!script.contains(secret), "{secret}");
        }
    }

    /// Every attribute the script writes is one the table lists for an instance's report, every
    /// write goes to its own report with its run and attempt, and a step status it writes is one
    /// the function reads.
    #[test]
    fn the_script_writes_its_report_as_the_table_lays_it_out() {
        use crate::table::{report, run, Writer, TTL};
        let script = render(&plan(), &layouts(), &values()).unwrap();
        // The attribute names bound to `#placeholders`, escaped quotes read as quotes.
        let text = script.replace("\\\"", "\"");
        let identity = format!("\"#prun\":\"{}\",\"#pa\":\"{}\",\"#pt\":\"{TTL}\"", report::RUN_ID, report::ATTEMPT);
        assert!(text.contains(&identity), "every write says its run and attempt");
        assert!(script.contains("--key \"{\\\"pk\\\":{\\\"S\\\":\\\"report#$CALLER\\\"}}\""), "its own report");
        assert!(!script.contains("run#$RUN_ID"), "never the run's record");
        let attributes: Vec<&str> = text
            .split("\"#")
            .skip(1)
            .filter_map(|rest| rest.split_once("\":\"").filter(|(placeholder, _)| !placeholder.contains('"')))
            .filter(|(_, after)| !after.starts_with(TTL))
            .filter_map(|(_, after)| after.split('"').next())
            .filter(|name| !name.starts_with('$'))
            .collect();
        assert!(attributes.len() >= 6, "{attributes:?}");
        for attribute in attributes {
            let listed = report::ATTRIBUTES.iter().find(|a| a.name == attribute);
            assert!(listed.is_some_and(|a| a.writer == Writer::Instance), "{attribute}");
        }
        let step_fields =
            [run::STEP_STATUS, run::STEP_EXIT_CODE, run::STEP_STARTED_AT, run::STEP_ENDED_AT, run::STEP_REASON];
        for field in step_fields {
            assert!(text.contains(&format!("\"{field}\":{{")), "{field}");
        }
        for status in ["failed", "skipped", "passed", "running", "not_applicable", "interrupted"] {
            assert!(crate::domain::StepStatus::parse(status).is_some() && script.contains(status), "{status}");
        }
    }
}
