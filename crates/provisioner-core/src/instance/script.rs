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
    let given: Vec<&str> = [(step.github_token, "token"), (step.cloud_data, "cloud")]
        .into_iter()
        .filter_map(|(given, word)| given.then_some(word))
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
const RUNTIME: &str = r##"
WORK_DIR=${PROVISIONER_WORK_DIR:-/var/lib/sliderule-run}
DATA_DIR=${PROVISIONER_DATA_DIR:-/data}
REPO_DIR="$WORK_DIR/sliderule"
LOG_DIR="$WORK_DIR/logs"
CONDA_DIR="$WORK_DIR/miniforge"
# What a runner image holds (KEY=VALUE lines), written by the run that made it.
IMAGE_HOLDS="$WORK_DIR/runner-image-holds"
# How long the client steps wait for the cluster to report nodes.
DISCOVERY_TIMEOUT_SECONDS=${PROVISIONER_DISCOVERY_TIMEOUT_SECONDS:-900}
# How often a running step's log is uploaded: a killed instance loses at most this much of it.
LOG_UPLOAD_SECONDS=${PROVISIONER_LOG_UPLOAD_SECONDS:-60}
# The metadata service (IMDSv2), and how often it is asked for a spot interruption notice.
IMDS=${PROVISIONER_IMDS_URL:-http://169.254.169.254}
INTERRUPT_POLL_SECONDS=${PROVISIONER_INTERRUPT_POLL_SECONDS:-5}
UPLOADER="" WATCHER=""
export HOME=${HOME:-/root}
export PATH="$WORK_DIR/bin:$CONDA_DIR/bin:$PATH"
export WORK_DIR DATA_DIR REPO_DIR LOG_DIR CONDA_DIR DISCOVERY_TIMEOUT_SECONDS IMAGE_HOLDS
# A runner image carries its own run's checkout and logs: none of them are this run's.
rm -rf "$LOG_DIR" "$REPO_DIR" "$WORK_DIR/interrupted"
mkdir -p "$LOG_DIR/running" "$LOG_DIR/ended" "$WORK_DIR/bin" "$DATA_DIR"
# The AMI has no git; the checkout needs it before any step can install tools.
command -v git >/dev/null || dnf install -y -q git >>"$LOG_DIR/report.log" 2>&1
# Each step's status and reason; what it needs and the function that runs it; the jobs running steps.
declare -A STATUS=() REASONS=() COMPONENTS=() NEEDS=() STEP_FUNCTIONS=() STEP_PIDS=()

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# Who this instance is to AWS: its role's session, ROLE-ID:INSTANCE-ID, which names its report
# and its log prefix (the only ones its role may write).
CALLER=${PROVISIONER_CALLER_ID:-$(aws sts get-caller-identity --query UserId --output text 2>>"$LOG_DIR/report.log")}
if [[ ! $CALLER =~ ^[A-Za-z0-9]+:i-[0-9a-f]+$ ]]; then
  echo "$(now) no caller id of an instance role ($CALLER): nothing can be reported" >>"$LOG_DIR/report.log"
  CALLER=""
fi
LOG_LOCATION="s3://$LOG_BUCKET/runs/$CALLER/"
# The repository's code runs as an unprivileged user that cannot reach the metadata service, so
# never with the instance role's credentials; only the provisioner's own steps run as root.
STEP_USER=${PROVISIONER_STEP_USER:-sliderule-run}
STEP_HOME="$WORK_DIR/home"
STEPS_WALLED=0
wall_off_steps() {
  command -v iptables >/dev/null || dnf install -y -q iptables-nft || return 1
  id -u "$STEP_USER" >/dev/null 2>&1 ||
    useradd --system --home-dir "$STEP_HOME" --shell /sbin/nologin "$STEP_USER" || return 1
  mkdir -p "$STEP_HOME" && chown "$STEP_USER:" "$STEP_HOME" || return 1
  # flock opens its lock file for reading: the step user needs only to read it.
  touch "$WORK_DIR/conda.lock" || return 1
  iptables -C OUTPUT -d 169.254.169.254/32 -m owner --uid-owner "$STEP_USER" -j REJECT 2>/dev/null ||
    iptables -I OUTPUT -d 169.254.169.254/32 -m owner --uid-owner "$STEP_USER" -j REJECT
}
if wall_off_steps >>"$LOG_DIR/report.log" 2>&1; then
  STEPS_WALLED=1
else
  echo "$(now) the step user could not be walled off from the metadata service: the repository's steps fail" \
    >>"$LOG_DIR/report.log"
fi
# The report goes with the run's record: 33 days after the run's time limit.
REPORT_KEPT_UNTIL=$((LIMIT_AT + 33 * 86400))

# The region of an ECR registry host (ACCOUNT.dkr.ecr.REGION.amazonaws.com), else the run's region.
ecr_region() {
  if [[ $1 =~ ^[0-9]+\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com ]]; then
    echo "${BASH_REMATCH[1]}"
  else
    echo "$REGION"
  fi
}
export -f ecr_region

# A JSON string of $1.
json_string() {
  local text=${1//\\/\\\\}
  text=${text//\"/\\\"}
  printf '"%s"' "$text"
}

# Updates this instance's report (report#CALLER, with its run and attempt), the one item its role
# may write: the function reads the current attempt's report with the run. A failed report is
# logged, never fatal. The attributes it writes are those table.rs lists for the report.
record() {
  local names="${2%\}},\"#prun\":\"run_id\",\"#pa\":\"attempt\",\"#pt\":\"expires_ttl\"}"
  local values="${3%\}},\":prun\":{\"S\":\"$RUN_ID\"},\":pa\":{\"N\":\"$ATTEMPT\"},\":pt\":{\"N\":\"$REPORT_KEPT_UNTIL\"}}"
  [[ -n $CALLER ]] || return 0
  aws dynamodb update-item --region "$REGION" --table-name "$TABLE" \
    --key "{\"pk\":{\"S\":\"report#$CALLER\"}}" --update-expression "$1, #prun = :prun, #pa = :pa, #pt = :pt" \
    --expression-attribute-names "$names" --expression-attribute-values "$values" \
    >/dev/null 2>>"$LOG_DIR/report.log" || echo "$(now) report failed: $1" >>"$LOG_DIR/report.log"
}

# The report's steps map is made with its first write: each step is then set in it by name.
record_state() {
  record 'SET #state = :state, #reported = :now, #steps = if_not_exists(#steps, :none)' \
    '{"#state":"instance_state","#reported":"reported_at","#steps":"steps"}' \
    "{\":state\":{\"S\":\"$1\"},\":now\":{\"S\":\"$(now)\"},\":none\":{\"M\":{}}}"
}

# report_step NAME STATUS EXIT_CODE STARTED ENDED [REASON]
report_step() {
  local reason=""
  [[ -n ${6:-} ]] && reason=",\"reason\":{\"S\":$(json_string "$6")}"
  local fields="\"status\":{\"S\":\"$2\"},\"exit_code\":{\"N\":\"$3\"},"
  fields+="\"started_at\":{\"S\":\"$4\"},\"ended_at\":{\"S\":\"$5\"}$reason"
  record 'SET #steps.#step = :step' "{\"#steps\":\"steps\",\"#step\":\"$1\"}" "{\":step\":{\"M\":{$fields}}}"
}

upload_log() {
  [[ -f "$LOG_DIR/$1.log" && -n $CALLER ]] || return 0
  aws s3 cp --only-show-errors --region "$REGION" "$LOG_DIR/$1.log" "$LOG_LOCATION$1.log" \
    2>>"$LOG_DIR/report.log" || echo "$(now) upload failed: $1" >>"$LOG_DIR/report.log"
}

# Uploads the log of running step $1 every LOG_UPLOAD_SECONDS, until stopped or its step's job
# ($2) is gone.
upload_while_running() {
  while sleep "$LOG_UPLOAD_SECONDS" && kill -0 "$2" 2>/dev/null; do upload_log "$1"; done
}

# Ends process $1 and every process under it, deepest first.
kill_tree() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
  kill "$1" 2>/dev/null
}

# Stops background job $1 (a pid; nothing when empty) and what it started.
stop_job() {
  [[ -n $1 ]] || return 0
  kill_tree "$1"
  wait "$1" 2>/dev/null
}

stop_uploader() {
  stop_job "$UPLOADER"
  UPLOADER=""
}

# The instance is going away: each running step's log is uploaded and the step reported
# interrupted, so the function knows where it stopped, and the instance says why ($1):
# `interrupted` on a spot notice (EC2 reclaims it two minutes later; the next attempt follows),
# `timed_out` when its deadman fired (the run's time limit; never retried). The marker keeps the
# exit trap from reporting an outcome.
going_away() {
  local file step
  [[ -f "$WORK_DIR/interrupted" ]] && return 0
  : >"$WORK_DIR/interrupted"
  for file in "$LOG_DIR"/running/*; do
    [[ -f $file ]] || continue
    step=${file##*/}
    upload_log "$step"
    report_step "$step" interrupted -1 "$(cat "$file")" "$(now)"
  done
  record_state "$1"
}

interrupted() { going_away interrupted; }

# Asks the metadata service (IMDSv2: a session token first) for a spot interruption notice.
watch_interruption() {
  local token action
  while sleep "$INTERRUPT_POLL_SECONDS"; do
    token=$(curl -sf -m 2 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$IMDS/latest/api/token") || continue
    action=$(curl -sf -m 2 -H "X-aws-ec2-metadata-token: $token" "$IMDS/latest/meta-data/spot/instance-action") ||
      continue
    if [[ $action == *'"action"'* ]]; then
      interrupted
      return 0
    fi
  done
}

stop_watcher() {
  stop_job "$WATCHER"
  WATCHER=""
}

# Replaces $1 in what passes through with [redacted].
redact() {
  local line
  while IFS= read -r line || [[ -n $line ]]; do printf '%s\n' "${line//"$1"/[redacted]}"; done
}

# Runs a command with SLIDERULE_GITHUB_TOKEN read from Secrets Manager: the token exists only in
# this command's environment and never reaches a log.
with_github_token() {
  local token
  if [[ -z $GITHUB_TOKEN_SECRET ]]; then
    echo "no GitHub token secret is configured (the provisioner's GitHubTokenSecretArn): running without a token"
    "$@"
    return
  fi
  if ! token=$(aws secretsmanager get-secret-value --region "$REGION" --secret-id "$GITHUB_TOKEN_SECRET" \
    --query SecretString --output text 2>/dev/null) || [[ -z $token ]]; then
    echo "could not read the GitHub token from secret $GITHUB_TOKEN_SECRET: does the TEST runner role allow it?"
    return 1
  fi
  SLIDERULE_GITHUB_TOKEN=$token "$@" 2>&1 | redact "$token"
}

# Runs a command with temporary credentials of the TEST step role (AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), taken for step $1: it reads cloud data with them and
# reaches nothing of the instance role's. They last an hour, AWS's most for a role taken by a role.
with_step_credentials() {
  local name=$1 session credentials
  shift
  if [[ -z $STEP_ROLE_ARN ]]; then
    echo "no step role is configured (the provisioner's TestStepRole): running without cloud credentials"
    "$@"
    return
  fi
  session="step-${CALLER#*:}-$name"
  if ! credentials=$(aws sts assume-role --region "$REGION" --role-arn "$STEP_ROLE_ARN" \
    --role-session-name "${session:0:64}" --duration-seconds 3600 \
    --query 'Credentials.[AccessKeyId,SecretAccessKey,SessionToken]' --output text 2>>"$LOG_DIR/report.log"); then
    echo "could not take the step role $STEP_ROLE_ARN: does the TEST runner role allow it?"
    return 1
  fi
  read -r AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN <<<"$credentials"
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
  "$@"
}

# Step $1 ended as $2 (with reason $3): in this shell, and in a file the scheduler reads when the
# step ran in a job of its own.
step_ended() {
  STATUS[$1]=$2
  REASONS[$1]=${3:-}
  printf '%s\n%s\n' "$2" "${3:-}" >"$LOG_DIR/ended/$1"
  rm -f "$LOG_DIR/running/$1"
}

# Reads how step $1 ended from its file into STATUS and REASONS; false while it has not ended.
read_ended() {
  local status="" reason=""
  [[ -f "$LOG_DIR/ended/$1" ]] || return 1
  { IFS= read -r status; IFS= read -r reason; } <"$LOG_DIR/ended/$1"
  STATUS[$1]=$status
  REASONS[$1]=$reason
}

# Starts each step of the plan after the checkout once every step it needs has ended, in the
# plan's order among those ready, at most PARALLELISM at once, each as a job of its own (bash
# 5.1's `wait -n` returns for a job that ended before it was called); returns when all ended.
run_steps() {
  local name need ready waiting=("${STEPS[@]:1}") still
  while ((${#waiting[@]} > 0 || ${#STEP_PIDS[@]} > 0)); do
    still=()
    for name in "${waiting[@]}"; do
      ready=1
      for need in ${NEEDS[$name]//,/ }; do
        case ${STATUS[$need]:-} in "" | running) ready=0 ;; esac
      done
      if ((ready && ${#STEP_PIDS[@]} < PARALLELISM)); then
        STATUS[$name]=running
        "${STEP_FUNCTIONS[$name]}" &
        STEP_PIDS[$name]=$!
      else
        still+=("$name")
      fi
    done
    waiting=("${still[@]}")
    # Nothing runs and nothing can start: a plan's needs are earlier steps, so never.
    ((${#STEP_PIDS[@]} > 0)) || break
    wait -n "${STEP_PIDS[@]}" 2>/dev/null
    for name in "${!STEP_PIDS[@]}"; do
      if read_ended "$name" || ! kill -0 "${STEP_PIDS[$name]}" 2>/dev/null; then
        wait "${STEP_PIDS[$name]}" 2>/dev/null
        read_ended "$name" || job_died "$name"
        unset "STEP_PIDS[$name]"
      fi
    done
  done
}

# Step $1's job ended without saying how (killed, out of memory): the step failed, and says so.
job_died() {
  local reason="its job ended without reporting how (killed, or out of memory)"
  report_step "$1" failed -1 "$(cat "$LOG_DIR/running/$1" 2>/dev/null || now)" "$(now)" "$reason"
  upload_log "$1"
  step_ended "$1" failed "$reason"
}

# Stops the jobs of the steps still running.
stop_steps() {
  local name
  for name in "${!STEP_PIDS[@]}"; do stop_job "${STEP_PIDS[$name]}"; done
  STEP_PIDS=()
}

# run_step NAME host|root|container NEEDS COMPONENT GIVEN COMMANDS [missing|matches PATH PATTERN REASON]...
# A host step runs as the step user, a root one as root, a container one in the build environment;
# GIVEN lists what it gets besides: token (the GitHub token), cloud (the step role's credentials).
# A step is skipped when a step it needs failed or was skipped, and not applicable when one it
# needs is, when the checked-out version has no directory for its component, or when one of its
# conditions holds.
run_step() {
  local name=$1 place=$2 needs=$3 component=$4 given=$5 commands=$6 started code need dir reason=""
  shift 6
  started=$(now)
  for need in ${needs//,/ }; do
    case ${STATUS[$need]:-} in
      passed) ;;
      not_applicable) [[ -n $reason ]] || reason=${REASONS[$need]} ;;
      *)
        report_step "$name" skipped -1 "$started" "$(now)"
        step_ended "$name" skipped
        return 0
        ;;
    esac
  done
  # Root runs nothing in the step user's checkout but a component of it: no file of the
  # repository's (a git config, a tool on a relative path) is read by root by accident.
  dir=$REPO_DIR
  [[ $place == root ]] && dir=$WORK_DIR
  if [[ -z $reason && -n $component ]]; then
    if [[ -z ${COMPONENTS[$component]:-} ]]; then
      reason="layout $LAYOUT has no $component"
    elif [[ ! -d $REPO_DIR/${COMPONENTS[$component]} ]]; then
      reason="this version has no $component (no ${COMPONENTS[$component]})"
    else
      dir=$REPO_DIR/${COMPONENTS[$component]}
    fi
  fi
  while [[ -z $reason ]] && (($# >= 4)); do
    case $1 in
      missing) [[ -e $dir/$2 ]] || reason=$4 ;;
      matches) grep -rqsE -- "$3" "$dir/$2" && reason=$4 ;;
    esac
    shift 4
  done
  if [[ -n $reason ]]; then
    printf '%s is not applicable: %s\n' "$name" "$reason" >"$LOG_DIR/$name.log"
    report_step "$name" not_applicable -1 "$started" "$(now)" "$reason"
    upload_log "$name"
    step_ended "$name" not_applicable "$reason"
    return 0
  fi
  STATUS[$name]=running
  printf '%s\n' "$started" >"$LOG_DIR/running/$name"
  report_step "$name" running -1 "$started" "$started"
  mkdir -p "$dir"
  local runner=(bash -euo pipefail -c "$commands")
  case $place in
    host)
      if ((!STEPS_WALLED)); then
        echo "the step user is not walled off from the metadata service (see report.log): not running the" \
          "repository's code where the instance role's credentials are in reach" >"$LOG_DIR/$name.log"
        report_step "$name" failed 1 "$started" "$(now)"
        upload_log "$name"
        step_ended "$name" failed
        return 0
      fi
      # Its own home and conda environments: the base environment and the tools stay root's.
      runner=(runuser -m -u "$STEP_USER" -- env HOME="$STEP_HOME" PATH="$PATH"
        CONDA_ENVS_DIRS="$STEP_HOME/conda/envs" CONDA_PKGS_DIRS="$STEP_HOME/conda/pkgs" "${runner[@]}")
      ;;
    container)
      # The repository at the same path as outside (its make files use absolute paths), and the
      # data. On Docker's bridge network: the launch's hop limit of 1 keeps the metadata service
      # out of reach. The step credentials, when given, pass by name.
      runner=(docker run --rm -v "$REPO_DIR:$REPO_DIR" -v "$DATA_DIR:/data" -w "$dir"
        -e CLUSTER -e ORGANIZATION -e VERSION -e IMAGE_TAG -e COMMIT -e DOMAIN -e REGION -e LAYOUT
        -e PROJECT_BUCKET -e PROJECT_FOLDER -e AWS_REGION="$REGION"
        -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY -e AWS_SESSION_TOKEN "$BUILD_IMAGE" "${runner[@]}")
      ;;
  esac
  if [[ ,$given, == *,cloud,* ]]; then runner=(with_step_credentials "$name" "${runner[@]}"); fi
  if [[ ,$given, == *,token,* ]]; then runner=(with_github_token "${runner[@]}"); fi
  upload_while_running "$name" "$BASHPID" >/dev/null 2>&1 &
  UPLOADER=$!
  (cd "$dir" && "${runner[@]}") >"$LOG_DIR/$name.log" 2>&1
  code=$?
  stop_uploader
  local status=failed
  ((code == 0)) && status=passed
  report_step "$name" "$status" "$code" "$started" "$(now)"
  upload_log "$name"
  step_ended "$name" "$status"
}

# Step $1 made what the runner image this instance booted from holds, if its check ($2) passes:
# then it passed, in no time. Else it says why and fails, and the step runs itself.
held_step() {
  local at
  at=$(now)
  if (cd "$WORK_DIR" && bash -euo pipefail -c "$2") >"$LOG_DIR/$1.check.log" 2>&1; then
    report_step "$1" passed 0 "$at" "$at" "the runner image $RUNNER_IMAGE holds what it makes (checked)"
    step_ended "$1" passed
    return 0
  fi
  echo "$(now) $1: the runner image $RUNNER_IMAGE failed its check; running the step" >>"$LOG_DIR/report.log"
  cat "$LOG_DIR/$1.check.log" >>"$LOG_DIR/report.log"
  return 1
}

# The digest ($BUILD_IMAGE pulled) of the build environment, if docker has it.
build_image_digest() {
  docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$BUILD_IMAGE" 2>/dev/null |
    sed -n 's/.*@\(sha256:[0-9a-f]\{64\}\)$/\1/p' | head -n 1 || true
}
export -f build_image_digest

# What the image about to be made holds: in the image (for the runs booted from it, which say
# when the build environment moved since) and in the record (for the image's tags).
record_holds() {
  local digest tools="" tool version
  digest=$(build_image_digest)
  for tool in git make docker node conda; do
    version=$("$tool" --version 2>/dev/null | head -n 1 | grep -o '[0-9][0-9.]*' | head -n 1 || true)
    [[ -n $version ]] && tools+="$tool=$version "
  done
  tools=${tools% }
  printf 'BUILD_IMAGE=%s\nBUILD_IMAGE_DIGEST=%s\nTOOLS=%s\n' "$BUILD_IMAGE" "$digest" "$tools" >"$IMAGE_HOLDS"
  local fields="\"tools\":{\"S\":\"$tools\"}"
  [[ -n $digest ]] && fields+=",\"build_image_digest\":{\"S\":\"$digest\"}"
  record 'SET #holds = :holds' '{"#holds":"holds"}' "{\":holds\":{\"M\":{$fields}}}"
}

# After the checkout: the commit it resolved to, and the layout it has.
read_checkout() {
  local commit layout
  commit=$(cat "$LOG_DIR/commit" 2>/dev/null || true)
  if [[ $commit =~ ^[0-9a-f]{40}$ ]]; then
    COMMIT=$commit
    record 'SET #commit = :commit' '{"#commit":"commit"}' "{\":commit\":{\"S\":\"$COMMIT\"}}"
  fi
  # The checkout is the step user's: the repository's steps write in it.
  if [[ -d $REPO_DIR ]] && ! chown -R "$STEP_USER:" "$REPO_DIR" 2>>"$LOG_DIR/report.log"; then STEPS_WALLED=0; fi
  layout=$(cat "$LOG_DIR/layout" 2>/dev/null || true)
  if [[ $layout =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]]; then
    LAYOUT=$layout
    load_layout "$LAYOUT"
    record 'SET #layout = :layout' '{"#layout":"layout"}' "{\":layout\":{\"S\":\"$LAYOUT\"}}"
  fi
}

# On any ending: mark what never ran, report images and the outcome, upload logs, power off. An
# instance that is going away (a spot interruption, a signal from its shutdown) claims no outcome:
# its running step is reported interrupted, and the function decides what follows. A failed run
# with a hold keeps the instance up that long for debugging.
finish() {
  local code=$? outcome=succeeded name image images=""
  trap - EXIT TERM INT HUP
  stop_steps
  stop_uploader
  stop_watcher
  if [[ -f "$WORK_DIR/interrupted" ]] || ((code == 143)); then
    if (($(date +%s) >= LIMIT_AT)); then going_away timed_out; else interrupted; fi
    upload_log report
    shutdown -h now
    exit "$code"
  fi
  for name in "${STEPS[@]}"; do
    # A step that ended while the scheduler was not looking.
    [[ ${STATUS[$name]:-} == running ]] && read_ended "$name"
    case ${STATUS[$name]:-} in
      passed | not_applicable) ;;
      running)
        outcome=failed
        report_step "$name" failed "$code" "$(now)" "$(now)"
        upload_log "$name"
        ;;
      "") outcome=failed; report_step "$name" skipped -1 "$(now)" "$(now)" ;;
      *) outcome=failed ;;
    esac
  done
  if [[ -f "$LOG_DIR/images" ]]; then
    while read -r image; do
      [[ $image =~ ^[A-Za-z0-9./:_@-]+$ ]] && images+="{\"S\":\"$image\"},"
    done <"$LOG_DIR/images"
    [[ -n $images ]] && record 'SET #images = :images' '{"#images":"images"}' "{\":images\":{\"L\":[${images%,}]}}"
  fi
  if [[ $outcome == succeeded && $KIND == runner_image ]]; then
    # The image keeps no registry credential and no checkout, and is on disk before the outcome.
    record_holds
    rm -rf "$REPO_DIR" "$HOME/.docker/config.json"
    sync
  fi
  upload_log report
  record 'SET #state = :state, #outcome = :outcome, #ended = :now' \
    '{"#state":"instance_state","#outcome":"outcome","#ended":"ended_at"}' \
    "{\":state\":{\"S\":\"finished\"},\":outcome\":{\"S\":\"$outcome\"},\":now\":{\"S\":\"$(now)\"}}"
  if [[ $outcome == failed ]] && ((HOLD_MINUTES > 0)); then
    echo "$(now) the run failed: holding the instance for $HOLD_MINUTES minutes" >>"$LOG_DIR/report.log"
    shutdown -h "+$HOLD_MINUTES"
  elif [[ $outcome == succeeded && $KIND == runner_image ]]; then
    # The function images this disk, then terminates the instance (the deadman stands).
    echo "$(now) the runner image steps passed: waiting to be imaged" >>"$LOG_DIR/report.log"
  else
    shutdown -h now
  fi
  exit "$code"
}
"##;

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
