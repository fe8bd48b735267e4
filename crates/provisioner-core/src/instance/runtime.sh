# shellcheck shell=bash
# The fixed part of every run's user-data (instance/script.rs renders it after the run's values,
# which are assigned above it, and leaves out these full-line comments).
# shellcheck disable=SC2154
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
# The repository's code runs as an unprivileged user, never with the instance role: its requests
# to the metadata service go to a stand-in of ours, which answers with the TEST step role's
# credentials while a step marked cloud_data runs (the selftests find credentials only there), and
# with none otherwise; only the provisioner's own steps run as root.
STEP_USER=${PROVISIONER_STEP_USER:-sliderule-run}
STEP_HOME="$WORK_DIR/home"
STEP_IDS=""
STEPS_WALLED=0
STEP_METADATA=""
IMDS_ADDRESS=169.254.169.254
# The stand-in metadata service: PORT_FILE ROLE_ARN SESSION SERVING_DIR.
STEP_METADATA_PY='
import http.server, json, os, subprocess, sys, time
port_file, role, session, serving = sys.argv[1:5]
cached = {"until": 0}
def credentials():
    if cached["until"] < time.time() + 300:
        out = subprocess.run(["aws", "sts", "assume-role", "--region", os.environ["REGION"], "--role-arn", role,
            "--role-session-name", session,
            "--duration-seconds", "3600", "--query", "Credentials", "--output", "json"],
            capture_output=True, text=True, check=True).stdout
        c = json.loads(out)
        cached["body"] = json.dumps({"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": c["AccessKeyId"],
            "SecretAccessKey": c["SecretAccessKey"], "Token": c["SessionToken"], "Expiration": c["Expiration"]})
        cached["until"] = time.time() + 3000
    return cached["body"]
class Metadata(http.server.BaseHTTPRequestHandler):
    def answer(self, code, body=""):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())
    def do_PUT(self):
        self.answer(200, "step-metadata") if self.path == "/latest/api/token" else self.answer(404)
    def do_GET(self):
        base = "/latest/meta-data/iam/security-credentials/"
        if self.path.rstrip("/") == "/latest/meta-data":
            self.answer(200, "iam/")
        elif not (role and os.listdir(serving)):
            self.answer(404)
        elif self.path == base:
            self.answer(200, "sliderule-test-step")
        elif self.path == base + "sliderule-test-step":
            try:
                self.answer(200, credentials())
            except Exception:
                self.answer(503)
        else:
            self.answer(404)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
with open(port_file, "w") as f:
    f.write(str(server.server_port))
server.serve_forever()
'
wall_off_steps() {
  local port=""
  command -v iptables >/dev/null || dnf install -y -q iptables-nft || return 1
  id -u "$STEP_USER" >/dev/null 2>&1 ||
    useradd --system --home-dir "$STEP_HOME" --shell /sbin/nologin "$STEP_USER" || return 1
  STEP_IDS="$(id -u "$STEP_USER"):$(id -g "$STEP_USER")" || return 1
  mkdir -p "$STEP_HOME" "$WORK_DIR/serving" && chown "$STEP_USER:" "$STEP_HOME" || return 1
  rm -f "$WORK_DIR/serving/"* "$WORK_DIR/step-metadata.port"
  # flock opens its lock file for reading: the step user needs only to read it.
  touch "$WORK_DIR/conda.lock" || return 1
  python3 -c "$STEP_METADATA_PY" "$WORK_DIR/step-metadata.port" "$STEP_ROLE_ARN" "step-${CALLER#*:}" \
    "$WORK_DIR/serving" 2>>"$LOG_DIR/report.log" &
  STEP_METADATA=$!
  for _ in {1..50}; do
    port=$(cat "$WORK_DIR/step-metadata.port" 2>/dev/null) && [[ -n $port ]] && break
    sleep 0.1
  done
  [[ -n $port ]] || return 1
  # The step user's requests to the metadata service reach the stand-in; were that rule gone,
  # the second refuses them.
  iptables -t nat -C OUTPUT -d "$IMDS_ADDRESS/32" -p tcp --dport 80 -m owner --uid-owner "$STEP_USER" \
    -j DNAT --to-destination "127.0.0.1:$port" 2>/dev/null ||
    iptables -t nat -I OUTPUT -d "$IMDS_ADDRESS/32" -p tcp --dport 80 -m owner --uid-owner "$STEP_USER" \
      -j DNAT --to-destination "127.0.0.1:$port" || return 1
  iptables -C OUTPUT -d "$IMDS_ADDRESS/32" -m owner --uid-owner "$STEP_USER" -j REJECT 2>/dev/null ||
    iptables -I OUTPUT -d "$IMDS_ADDRESS/32" -m owner --uid-owner "$STEP_USER" -j REJECT
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

# report_step NAME STATUS EXIT_CODE STARTED ENDED [REASON] [TESTS]
report_step() {
  local reason="" tests=""
  [[ -n ${6:-} ]] && reason=",\"reason\":{\"S\":$(json_string "$6")}"
  [[ -n ${7:-} ]] && tests=",\"tests\":{\"S\":$(json_string "$7")}"
  local fields="\"status\":{\"S\":\"$2\"},\"exit_code\":{\"N\":\"$3\"},"
  fields+="\"started_at\":{\"S\":\"$4\"},\"ended_at\":{\"S\":\"$5\"}$reason$tests"
  record 'SET #steps.#step = :step' "{\"#steps\":\"steps\",\"#step\":\"$1\"}" "{\":step\":{\"M\":{$fields}}}"
}

# The counts and failing test ids of a step's suite report ($1 the format: junit, jest or
# selftest; $2 the report, the step's log for selftest; $3 the step's directory, which jest's
# paths are made relative to), as compact JSON; nothing when there is no report it can read.
# At most 50 failing ids, each at most 200 characters: the full report is uploaded.
suite_results() {
  [[ -s $2 ]] && (($(stat -c %s "$2") <= 100000000)) || return 0
  timeout 120 python3 - "$@" 2>>"$LOG_DIR/report.log" <<'PY'
import json,os,sys,xml.etree.ElementTree as E
f,p,d=sys.argv[1:4];n={"passed":0,"failed":0,"skipped":0};x=[]
def t(i,o):
 n[o]+=1
 if o=="failed":x.append(i[:200])
if f=="junit":
 for c in E.parse(p).getroot().iter("testcase"):
  a,k,m=c.get("name",""),c.get("classname",""),c.get("file") or "";q=m[:-3].replace("/",".")
  i="::".join([m,*k[len(q):].split(".")[1:],a]) if m.endswith(".py") and (k+".").startswith(q+".") else k+"::"+a
  t(i,"failed" if c.find("failure") is not None or c.find("error") is not None else "skipped" if c.find("skipped") is not None else "passed")
elif f=="jest":
 for s in json.load(open(p)).get("testResults",[]):
  for c in s.get("assertionResults",[]):t(os.path.relpath(s.get("name",""),d)+"::"+c.get("fullName",""),{"passed":"passed","failed":"failed"}.get(c.get("status"),"skipped"))
else:
 e=None
 for l in open(p,errors="replace"):
  l=l.strip()
  if l.startswith("Executed test: "):e=l[15:]
  elif l.startswith("Number of errors: ") and e is not None:t(e,"passed" if l.endswith(" 0") else "failed");e=None
  elif l.startswith("Skipped test: "):t(l[14:],"skipped")
n["failing"]=x[:50];print(json.dumps(n,separators=(",",":")))
PY
}

# upload_log NAME [FILE SUFFIX]: the step's log, or FILE as NAME.SUFFIX (its suite's report).
upload_log() {
  local file=${2:-$LOG_DIR/$1.log} suffix=${3:-log}
  [[ -f $file && -n $CALLER ]] || return 0
  aws s3 cp --only-show-errors --region "$REGION" "$file" "$LOG_LOCATION$1.$suffix" \
    2>>"$LOG_DIR/report.log" || echo "$(now) upload failed: $1.$suffix" >>"$LOG_DIR/report.log"
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
  local runner=(bash -euo pipefail -c "$commands") results="" results_file="" tests=""
  # A test step's suite writes its report where the step user may ($RESULTS_FILE).
  if [[ ,$given, == *,results:* ]]; then
    results=${given#*results:}
    results=${results%%,*}
    results_file="$STEP_HOME/$name.results"
    rm -f "$results_file"
  fi
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
        CONDA_ENVS_DIRS="$STEP_HOME/conda/envs" CONDA_PKGS_DIRS="$STEP_HOME/conda/pkgs"
        STEP="$name" RESULTS="$results" RESULTS_FILE="$results_file" "${runner[@]}")
      # Every pytest the step runs (through conda, or a make target) writes its JUnit report.
      [[ $results == junit ]] && runner=(env PYTEST_ADDOPTS="--junitxml=$results_file -o junit_family=xunit1"
        "${runner[@]}")
      ;;
    container)
      if ((!STEPS_WALLED)); then
        echo "the step user is not walled off from the metadata service (see report.log)" >"$LOG_DIR/$name.log"
        report_step "$name" failed 1 "$started" "$(now)"
        upload_log "$name"
        step_ended "$name" failed
        return 0
      fi
      # The repository at the same path as outside (its make files use absolute paths), and the
      # data. As the step user, as the repository's own build target runs it, so the wall holds.
      runner=(docker run --rm --network host --user "$STEP_IDS" -e HOME=/tmp -v "$REPO_DIR:$REPO_DIR"
        -v "$DATA_DIR:/data" -w "$dir" -e CLUSTER -e ORGANIZATION -e VERSION -e IMAGE_TAG -e COMMIT
        -e DOMAIN -e REGION -e LAYOUT -e PROJECT_BUCKET -e PROJECT_FOLDER -e AWS_REGION="$REGION" -e STEP="$name"
        -e RESULTS="$results"
        "$BUILD_IMAGE" "${runner[@]}")
      ;;
  esac
  if [[ ,$given, == *,token,* ]]; then runner=(with_github_token "${runner[@]}"); fi
  # The stand-in metadata service answers with the step role while a cloud_data step runs.
  if [[ ,$given, == *,cloud,* ]]; then touch "$WORK_DIR/serving/$name"; fi
  upload_while_running "$name" "$BASHPID" >/dev/null 2>&1 &
  UPLOADER=$!
  (cd "$dir" && "${runner[@]}") >"$LOG_DIR/$name.log" 2>&1
  code=$?
  rm -f "$WORK_DIR/serving/$name"
  stop_uploader
  local status=failed
  ((code == 0)) && status=passed
  case $results in
    selftest) tests=$(suite_results selftest "$LOG_DIR/$name.log" "$dir") ;;
    ?*) tests=$(suite_results "$results" "$results_file" "$dir") ;;
  esac
  report_step "$name" "$status" "$code" "$started" "$(now)" "" "$tests"
  upload_log "$name"
  [[ -n $results_file ]] && upload_log "$name" "$results_file" results
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
  stop_job "$STEP_METADATA"
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
