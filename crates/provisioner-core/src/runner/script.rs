//! Renders an instance's user-data from a plan. Every value that reaches the script is checked
//! against a narrow pattern and single-quoted; step commands come from the reviewed catalog. The
//! script holds no secret: the instance's role gives it what it needs.

use super::plan::{Plan, StepPlace, CHECKOUT_STEP};
use crate::domain::names::{shown, ClusterName, GitRef};
use crate::error::Error;

/// What a run's script is told.
#[derive(Debug, Clone)]
pub struct RunValues {
    pub run_id: String,
    pub kind: &'static str,
    pub cluster: ClusterName,
    pub version: GitRef,
    pub region: String,
    pub table: String,
    pub log_bucket: String,
    pub repository: String,
    pub build_image: String,
    pub registry: String,
    pub domain: String,
    /// The deadman: the instance powers off (and so terminates) this many minutes after boot.
    pub time_limit_minutes: u32,
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

impl RunValues {
    /// Checks every value against what it may hold, whatever its source.
    pub fn check(&self) -> Result<(), Error> {
        let id = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        let aws_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        let bucket = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.');
        let url = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '.' | '-' | '_');
        let image = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '.' | '-' | '_' | '@');
        let host = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.');
        check("run id", &self.run_id, id, 100)?;
        check("region", &self.region, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-', 32)?;
        check("table", &self.table, aws_name, 255)?;
        check("log bucket", &self.log_bucket, bucket, 63)?;
        check("repository", &self.repository, url, 200)?;
        if !self.repository.starts_with("https://") {
            return Err(Error::invalid(format!("the repository {} is not an https:// URL", shown(&self.repository))));
        }
        check("build image", &self.build_image, image, 255)?;
        check("registry", &self.registry, image, 255)?;
        check("domain", &self.domain, host, 253)?;
        if !(self.kind == "test" || self.kind == "build") {
            return Err(Error::invalid(format!("the run kind {} is unknown", shown(self.kind))));
        }
        if self.time_limit_minutes == 0 || self.time_limit_minutes > 24 * 60 {
            return Err(Error::invalid("the run's time limit must be between 1 minute and 24 hours"));
        }
        Ok(())
    }
}

/// The bash user-data of a run.
pub fn render(plan: &Plan, values: &RunValues) -> Result<String, Error> {
    plan.check(values.kind)?;
    values.check()?;
    let q = shell_quote;
    let mut script = String::new();
    let mut line = |text: &str| {
        script.push_str(text);
        script.push('\n');
    };
    line("#!/bin/bash");
    line("# Step commands are single-quoted on purpose: they expand when the step runs.");
    line("# shellcheck disable=SC2016");
    line(&format!("# SlideRule Provisioner {} run {}: rendered from a plan of named steps. Holds no secrets.", values.kind, values.run_id));
    line("# The deadman comes first: whatever happens below, the instance powers off, and so terminates.");
    line(&format!("shutdown -h +{}", values.time_limit_minutes));
    line("set -u -o pipefail");
    line("");
    line(&format!("RUN_ID={}", q(&values.run_id)));
    line(&format!("KIND={}", q(values.kind)));
    line(&format!("CLUSTER={}", q(values.cluster.as_str())));
    line(&format!("ORGANIZATION={}", q(values.cluster.as_str())));
    line(&format!("VERSION={}", q(values.version.as_str())));
    line(&format!("REGION={}", q(&values.region)));
    line(&format!("TABLE={}", q(&values.table)));
    line(&format!("LOG_BUCKET={}", q(&values.log_bucket)));
    line(&format!("REPOSITORY={}", q(&values.repository)));
    line(&format!("BUILD_IMAGE={}", q(&values.build_image)));
    line(&format!("REGISTRY={}", q(&values.registry)));
    line(&format!("DOMAIN={}", q(&values.domain)));
    line("COMMIT=unknown");
    line("export RUN_ID KIND CLUSTER ORGANIZATION VERSION REGION TABLE LOG_BUCKET REPOSITORY BUILD_IMAGE REGISTRY DOMAIN COMMIT");
    line(RUNTIME);
    line(&format!("STEPS=({})", plan.step_names().iter().map(|n| q(n)).collect::<Vec<_>>().join(" ")));
    line("trap finish EXIT");
    line("trap 'exit 143' TERM INT HUP");
    line("record_state running");
    line("");
    let checkout = r#"git clone --quiet "$REPOSITORY" "$REPO_DIR" && cd "$REPO_DIR" && git -c advice.detachedHead=false checkout --quiet "$VERSION" && git rev-parse HEAD > "$LOG_DIR/commit""#;
    line(&format!("run_step {} host '' {}", q(CHECKOUT_STEP), q(checkout)));
    line("read_commit");
    for step in &plan.steps {
        let place = match step.place {
            StepPlace::Host => "host",
            StepPlace::Container => "container",
        };
        let needs: Vec<&str> = std::iter::once(CHECKOUT_STEP).chain(step.needs.iter().map(String::as_str)).collect();
        line(&format!("run_step {} {} {} {}", q(&step.name), place, q(&needs.join(",")), q(&step.run)));
    }
    Ok(script)
}

/// The fixed part of every script: reporting, step running and the exit trap. Reports go to the
/// run's record (`run#<id>` in the table) and logs to `s3://<bucket>/runs/<id>/`.
const RUNTIME: &str = r##"
WORK_DIR=${PROVISIONER_WORK_DIR:-/var/lib/sliderule-run}
REPO_DIR="$WORK_DIR/sliderule"
LOG_DIR="$WORK_DIR/logs"
export WORK_DIR REPO_DIR LOG_DIR
mkdir -p "$LOG_DIR"
# The AMI has no git; the checkout needs it before any step can install tools.
command -v git >/dev/null || dnf install -y -q git >>"$LOG_DIR/report.log" 2>&1
declare -A STATUS=()

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# Updates the run record; a failed report is logged, never fatal.
record() {
  aws dynamodb update-item --region "$REGION" --table-name "$TABLE" \
    --key "{\"pk\":{\"S\":\"run#$RUN_ID\"}}" --update-expression "$1" \
    --expression-attribute-names "$2" --expression-attribute-values "$3" \
    >/dev/null 2>>"$LOG_DIR/report.log" || echo "$(now) report failed: $1" >>"$LOG_DIR/report.log"
}

record_state() {
  record 'SET #state = :state, #reported = :now' '{"#state":"instance_state","#reported":"reported_at"}' \
    "{\":state\":{\"S\":\"$1\"},\":now\":{\"S\":\"$(now)\"}}"
}

# report_step NAME STATUS EXIT_CODE STARTED ENDED
report_step() {
  record 'SET #steps.#step = :step' "{\"#steps\":\"steps\",\"#step\":\"$1\"}" \
    "{\":step\":{\"M\":{\"status\":{\"S\":\"$2\"},\"exit_code\":{\"N\":\"$3\"},\"started_at\":{\"S\":\"$4\"},\"ended_at\":{\"S\":\"$5\"}}}}"
}

upload_log() {
  [[ -f "$LOG_DIR/$1.log" ]] || return 0
  aws s3 cp --only-show-errors --region "$REGION" "$LOG_DIR/$1.log" "s3://$LOG_BUCKET/runs/$RUN_ID/$1.log" \
    2>>"$LOG_DIR/report.log" || echo "$(now) upload failed: $1" >>"$LOG_DIR/report.log"
}

# run_step NAME host|container NEEDS COMMANDS: skipped when a needed step did not pass.
run_step() {
  local name=$1 place=$2 needs=$3 commands=$4 started code need
  started=$(now)
  for need in ${needs//,/ }; do
    if [[ ${STATUS[$need]:-} != passed ]]; then
      STATUS[$name]=skipped
      report_step "$name" skipped -1 "$started" "$(now)"
      return 0
    fi
  done
  STATUS[$name]=running
  report_step "$name" running -1 "$started" "$started"
  mkdir -p "$REPO_DIR"
  if [[ $place == container ]]; then
    (cd "$REPO_DIR" && docker run --rm --network host -v "$REPO_DIR:/sliderule" -w /sliderule \
      -e CLUSTER -e ORGANIZATION -e VERSION -e COMMIT -e DOMAIN -e REGION \
      "$BUILD_IMAGE" bash -euo pipefail -c "$commands") >"$LOG_DIR/$name.log" 2>&1
  else
    (cd "$REPO_DIR" && bash -euo pipefail -c "$commands") >"$LOG_DIR/$name.log" 2>&1
  fi
  code=$?
  if ((code == 0)); then STATUS[$name]=passed; else STATUS[$name]=failed; fi
  report_step "$name" "${STATUS[$name]}" "$code" "$started" "$(now)"
  upload_log "$name"
}

read_commit() {
  local commit
  commit=$(cat "$LOG_DIR/commit" 2>/dev/null || true)
  if [[ $commit =~ ^[0-9a-f]{40}$ ]]; then
    COMMIT=$commit
    record 'SET #commit = :commit' '{"#commit":"commit"}' "{\":commit\":{\"S\":\"$COMMIT\"}}"
  fi
}

# On any ending: mark what never ran, report images and the outcome, upload logs, power off.
finish() {
  local code=$? outcome=succeeded name image images=""
  trap - EXIT TERM INT HUP
  for name in "${STEPS[@]}"; do
    case ${STATUS[$name]:-} in
      passed) ;;
      running) outcome=failed; report_step "$name" failed "$code" "$(now)" "$(now)" ;;
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
  upload_log report
  record 'SET #state = :state, #outcome = :outcome, #ended = :now' \
    '{"#state":"instance_state","#outcome":"outcome","#ended":"ended_at"}' \
    "{\":state\":{\"S\":\"finished\"},\":outcome\":{\"S\":\"$outcome\"},\":now\":{\"S\":\"$(now)\"}}"
  shutdown -h now
  exit "$code"
}
"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::plan::Step;

    pub fn values() -> RunValues {
        RunValues {
            run_id: "test-ci-1-20261123t120000-ab12".into(),
            kind: "test",
            cluster: ClusterName::parse("ci-1").unwrap(),
            version: GitRef::parse("main").unwrap(),
            region: "us-west-2".into(),
            table: "sliderule-provisioner".into(),
            log_bucket: "sliderule-provisioner-runs".into(),
            repository: "https://github.com/SlideRuleEarth/sliderule.git".into(),
            build_image: "742127912612.dkr.ecr.us-west-2.amazonaws.com/sliderule-buildenv:latest".into(),
            registry: "742127912612.dkr.ecr.us-west-2.amazonaws.com".into(),
            domain: "slideruleearth.io".into(),
            time_limit_minutes: 120,
        }
    }

    fn plan() -> Plan {
        Plan {
            steps: vec![
                Step { name: "lint".into(), run: "make lint".into(), place: StepPlace::Host, needs: vec![] },
                Step {
                    name: "selftest".into(),
                    run: "echo 'it''s' && make selftest".into(),
                    place: StepPlace::Container,
                    needs: vec!["lint".into()],
                },
            ],
        }
    }

    #[test]
    fn the_deadman_is_the_first_command() {
        let script = render(&plan(), &values()).unwrap();
        let first_command = script.lines().find(|l| !l.starts_with('#') && !l.trim().is_empty()).unwrap();
        assert_eq!(first_command, "shutdown -h +120");
    }

    #[test]
    fn steps_are_rendered_in_order_with_their_needs_and_quoted_commands() {
        let script = render(&plan(), &values()).unwrap();
        let checkout = script.find("run_step 'checkout' host ''").unwrap();
        let lint = script.find("run_step 'lint' host 'checkout' 'make lint'").unwrap();
        let selftest = script.find(r#"run_step 'selftest' container 'checkout,lint' 'echo '\''it'\'''\''s'\'' && make selftest'"#).unwrap();
        assert!(checkout < lint && lint < selftest);
        assert!(script.contains("STEPS=('checkout' 'lint' 'selftest')"));
    }

    #[test]
    fn values_are_single_quoted() {
        let script = render(&plan(), &values()).unwrap();
        assert!(script.contains("VERSION='main'\n"));
        assert!(script.contains("CLUSTER='ci-1'\n"));
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn values_that_could_reach_a_shell_are_refused() {
        type Spoil = fn(&mut RunValues);
        let attempts: [(&str, Spoil); 9] = [
            ("run id", |v| v.run_id = "x; reboot".into()),
            ("region", |v| v.region = "us-west-2$(id)".into()),
            ("table", |v| v.table = "t'b".into()),
            ("log bucket", |v| v.log_bucket = "b`id`".into()),
            ("repository", |v| v.repository = "https://x/$(id)".into()),
            ("repository", |v| v.repository = "file:///etc".into()),
            ("build image", |v| v.build_image = "img;id".into()),
            ("domain", |v| v.domain = "a b".into()),
            ("time limit", |v| v.time_limit_minutes = 0),
        ];
        for (what, spoil) in attempts {
            let mut spoiled = values();
            spoil(&mut spoiled);
            let error = render(&plan(), &spoiled).unwrap_err();
            assert_eq!(error.code(), "InvalidRequest", "{what}");
        }
    }

    #[test]
    fn no_secret_reaches_the_script() {
        let script = render(&plan(), &values()).unwrap();
        for secret in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "aws_secret", "password="] {
            assert!(!script.contains(secret), "{secret}");
        }
    }
}
