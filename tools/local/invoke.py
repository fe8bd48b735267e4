#!/usr/bin/env python3
"""Invokes one provisioner function and prints its response, or its error object, as JSON.

Exit status (the contract): 0 success, 1 function error, 2 the invocation itself failed.
With --local it calls the local Lambda emulator; otherwise the deployed function via
`aws lambda invoke`. With --follow, a `test`, `build` or `runner_image` answer of "running" is invoked again
with its run_id until the run ends; progress goes to stderr. With --table, a `status` answer is
printed as tables instead of JSON. Standard library only."""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
# Every directory under functions/ is one function.
FUNCTIONS = sorted(os.listdir(os.path.join(ROOT, "functions")))
# Functions whose event is always {}.
NO_ARGUMENTS = ("status", "sweep")
# The contract's bound on hold_minutes.
MAX_HOLD_MINUTES = 240
# Output keys of template.yaml naming each function.
OUTPUT_KEYS = {f: "".join(p.capitalize() for p in f.split("_")) + "FunctionName" for f in FUNCTIONS}
LOCAL_READ_TIMEOUT = 900
POLL_WAIT_SECONDS = 60


class InvocationFailed(Exception):
    """The function could not be reached or did not answer."""


def binary_name(function: str) -> str:
    return "provisioner-" + function.replace("_", "-")


# Lambda developer guide, "Lambda quotas": a synchronous invocation's response is at most 6 MB.
# The local emulator returns larger ones, so a local answer over it fails like on AWS.
LAMBDA_RESPONSE_BYTES = 6 * 1024 * 1024


def within_response_limit(body: bytes, function: str) -> bytes:
    if len(body) > LAMBDA_RESPONSE_BYTES:
        raise InvocationFailed(
            f"{function} answered {len(body)} bytes, more than Lambda's {LAMBDA_RESPONSE_BYTES}-byte response limit; "
            "AWS would fail this invocation"
        )
    return body


def invoke_local(function: str, payload: bytes) -> tuple[bool, object]:
    port = os.environ.get("LOCAL_LAMBDA_PORT", "9000")
    url = f"http://127.0.0.1:{port}/2015-03-31/functions/{binary_name(function)}/invocations"
    request = urllib.request.Request(url, data=payload, method="POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=LOCAL_READ_TIMEOUT) as response:
            return True, json.loads(within_response_limit(response.read(), function) or b"null")
    except urllib.error.HTTPError as error:
        # The emulator answers a function error with HTTP 500 and the error object.
        body = within_response_limit(error.read(), function)
        try:
            answer = json.loads(body)
        except ValueError:
            raise InvocationFailed(f"the local Lambda emulator answered HTTP {error.code}: {body[:300]!r}") from None
        if isinstance(answer, dict) and "errorType" in answer:
            return False, answer
        raise InvocationFailed(f"the local Lambda emulator answered HTTP {error.code}: {answer}") from None
    except (urllib.error.URLError, OSError) as error:
        raise InvocationFailed(
            f"the local Lambda emulator at 127.0.0.1:{port} did not answer ({error}); run `make local-up`"
        ) from None


def aws_cli() -> str:
    here = os.path.join(ROOT, ".venv", "bin", "aws")
    return here if os.path.exists(here) else (shutil.which("aws") or "aws")


def deployed_function_name(function: str) -> str:
    override = os.environ.get("PROVISIONER_" + function.upper() + "_FUNCTION")
    if override:
        return override
    stack = os.environ.get("PROVISIONER_STACK", "sliderule-provisioner")
    query = f"Stacks[0].Outputs[?OutputKey=='{OUTPUT_KEYS[function]}'].OutputValue | [0]"
    result = subprocess.run(
        [aws_cli(), "cloudformation", "describe-stacks", "--stack-name", stack, "--query", query, "--output", "text"],
        capture_output=True,
        text=True,
        check=False,
    )
    name = result.stdout.strip()
    if result.returncode != 0 or not name or name == "None":
        raise InvocationFailed(
            f"cannot find the {function} function in stack {stack}: {result.stderr.strip() or 'no such output'}"
        )
    return name


def invoke_aws(function: str, payload: bytes) -> tuple[bool, object]:
    name = deployed_function_name(function)
    with tempfile.TemporaryDirectory() as scratch:
        payload_file = os.path.join(scratch, "payload.json")
        answer_file = os.path.join(scratch, "answer.json")
        with open(payload_file, "wb") as out:
            out.write(payload)
        # fileb:// works with AWS CLI v1 and v2; no retries, so an error is reported once.
        env = dict(os.environ, AWS_MAX_ATTEMPTS="1", AWS_RETRY_MODE="standard")
        result = subprocess.run(
            [
                aws_cli(),
                "lambda",
                "invoke",
                "--function-name",
                name,
                "--payload",
                f"fileb://{payload_file}",
                "--cli-read-timeout",
                "910",
                "--cli-connect-timeout",
                "10",
                "--output",
                "json",
                answer_file,
            ],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if result.returncode != 0:
            raise InvocationFailed(f"aws lambda invoke {name} failed: {result.stderr.strip()}")
        meta = json.loads(result.stdout or "{}")
        with open(answer_file, "rb") as answer:
            body = json.loads(answer.read() or b"null")
        return "FunctionError" not in meta, body


def requested_by() -> str | None:
    """Who asks: $PROVISIONER_REQUESTED_BY (the nightly sets its actor and run), else
    `git config user.email`, else $USER; nothing when none is a valid name."""
    who = os.environ.get("PROVISIONER_REQUESTED_BY", "")
    if not who:
        try:
            who = subprocess.run(
                ["git", "config", "user.email"], capture_output=True, text=True, check=False
            ).stdout.strip()
        except OSError:
            who = ""
    who = who or os.environ.get("USER", "")
    valid = 1 <= len(who) <= 64 and all(c.isascii() and (c.isalnum() or c in "._@+-") for c in who)
    return who if valid else None


def stopped_following(args, run_id: str) -> None:
    """Ctrl-C while following a run stops the waiting, not the run: say how to go on."""
    local = " LOCAL=1" if args.local else ""
    print(f"\nstopped waiting; run {run_id} goes on. To wait for it again, or to end it:", file=sys.stderr)
    print(f'  make invoke{local} FUNCTION={args.function} PAYLOAD=\'{{"run_id": "{run_id}"}}\'', file=sys.stderr)
    print(f"  make cluster-cancel{local} RUN_ID={run_id}", file=sys.stderr)


def build_payload(args) -> bytes:
    if args.payload is not None:
        return args.payload.encode()
    event: dict = {}
    if args.function == "status" and args.cluster:
        return json.dumps({"cluster": args.cluster}).encode()
    if args.function in NO_ARGUMENTS:
        return b"{}"
    if args.function == "cancel":
        if not args.run_id:
            raise InvocationFailed("give RUN_ID= (the run_id a test or build answered with)")
        event["run_id"] = args.run_id
        who = requested_by()
        if who:
            event["requested_by"] = who
        return json.dumps(event).encode()
    if args.run_id:
        event["run_id"] = args.run_id
    elif args.function == "runner_image":
        if args.architecture:
            event["architecture"] = args.architecture
    else:
        if not args.cluster:
            raise InvocationFailed("give PAYLOAD=, or CLUSTER= for the cluster targets")
        event["cluster"] = args.cluster
        if args.function in ("test", "build"):
            if not args.version:
                raise InvocationFailed("give VERSION= (a git branch, tag or commit)")
            event["version"] = args.version
            if args.hold:
                if not args.hold.isdigit() or int(args.hold) > MAX_HOLD_MINUTES:
                    raise InvocationFailed(f"HOLD= must be a whole number of minutes, 0 to {MAX_HOLD_MINUTES}")
                event["hold_minutes"] = int(args.hold)
        elif args.function == "deploy" and args.version:
            event["version"] = args.version
        if args.function == "schedule_destroy":
            if args.at:
                event["time_to_destroy"] = args.at
            elif args.ttl:
                if not args.ttl.isdigit() or int(args.ttl) < 1:
                    raise InvocationFailed("TTL= must be a whole number of minutes")
                minutes = int(args.ttl)
                at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=minutes)
                event["time_to_destroy"] = at.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
            else:
                raise InvocationFailed("give AT= (RFC 3339) or TTL= (minutes)")
    if getattr(args, "dry_run", False) is True:
        event["dry_run"] = True
    # Who asks is recorded with what the call creates or ends; a resume creates nothing.
    if not args.run_id:
        who = requested_by()
        if who:
            event["requested_by"] = who
    if args.wait_seconds is not None:
        if not args.wait_seconds.isdigit():
            raise InvocationFailed("WAIT= must be a whole number of seconds")
        event["wait_seconds"] = int(args.wait_seconds)
    elif args.follow:
        # Answer "running" now and then, so progress can be printed.
        event["wait_seconds"] = POLL_WAIT_SECONDS
    return json.dumps(event).encode()


def report_progress(answer: dict, printed: set) -> None:
    for attempt in answer.get("attempts", []) or []:
        key = ("attempt", attempt.get("number"), attempt.get("outcome"), attempt.get("instance_id"))
        if key in printed:
            continue
        printed.add(key)
        where = f"{attempt.get('instance_id') or 'no instance yet'} ({attempt.get('market')})"
        if attempt.get("outcome") == "running":
            print(f"  attempt {attempt.get('number')} runs on {where}", file=sys.stderr)
        else:
            step = f" in step {attempt['step']}" if attempt.get("step") else ""
            print(
                f"  attempt {attempt.get('number')} on {where} ended: {attempt.get('outcome')}{step}", file=sys.stderr
            )
    if answer.get("held_until"):
        key = ("held", answer.get("held_until"))
        if key not in printed:
            printed.add(key)
            print(f"  its instance is held until {answer['held_until']}: {answer.get('connect')}", file=sys.stderr)
    layout = answer.get("layout")
    if layout and ("layout", layout) not in printed:
        printed.add(("layout", layout))
        print(f"  the checkout has repository layout {layout}", file=sys.stderr)
    for step in answer.get("steps", []) or []:
        status = step.get("status")
        key = (step.get("name"), status)
        if key in printed:
            continue
        if status in ("passed", "failed", "skipped"):
            printed.add(key)
            print(f"  {status:>14}  {step.get('name')}  ({step.get('duration_seconds', '?')} s)", file=sys.stderr)
        elif status == "not_applicable":
            printed.add(key)
            print(
                f"  {'not applicable':>14}  {step.get('name')}: {step.get('reason', 'this version has no such component')}",
                file=sys.stderr,
            )


def table(title: str, headers: list[str], rows: list[list], empty: str) -> None:
    print(f"{title}")
    if not rows:
        print(f"  {empty}\n")
        return
    cells = [[("-" if cell is None or cell == "" else str(cell)) for cell in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    for row in [headers, *cells]:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print()


def usd(value) -> str:
    return "-" if value is None else f"${value:,.2f}"


def steps_text(steps: list) -> str:
    return " ".join(f"{s.get('name')}={s.get('status')}" for s in steps or [])


def attempt_text(attempts) -> str:
    """`2 (on-demand)`: the current attempt's number and market."""
    if not attempts:
        return "-"
    last = attempts[-1]
    return f"{last.get('number')} ({last.get('market')})"


def tests_text(tests) -> str:
    """A run's test results in a cell: counts, then what changed since the run compared with."""
    if not tests:
        return "-"
    counts = tests.get("counts", {})
    text = f"{counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed"
    changes = [
        f"{len(tests.get(key) or [])} {words}"
        for key, words in (("new", "new"), ("still_failing", "still failing"), ("fixed", "fixed"), ("flaky", "flaky"))
        if tests.get(key)
    ]
    return text + (f" ({', '.join(changes)})" if changes else "")


def print_status(answer: dict) -> None:
    """The status answer as tables: clusters, active runs, recent runs, what the sweeper would do."""
    clusters = answer.get("clusters", [])
    table(
        f"Clusters ({len(clusters)})",
        [
            "CLUSTER",
            "PROFILE",
            "STACK",
            "VERSION",
            "BY",
            "AGE (MIN)",
            "DESTROY AT",
            "SCHEDULED BY",
            "COST/HOUR",
            "COST SO FAR",
        ],
        [
            [
                c.get("cluster"),
                c.get("profile"),
                c.get("stack_status"),
                c.get("version"),
                c.get("requested_by"),
                c.get("age_minutes"),
                c.get("time_to_destroy") or "not scheduled",
                c.get("destroy_requested_by"),
                usd(c.get("cost_per_hour_usd")),
                usd(c.get("cost_so_far_usd")),
            ]
            for c in clusters
        ],
        "none",
    )
    runs = answer.get("runs", [])
    table(
        f"Active runs ({len(runs)})",
        [
            "RUN",
            "KIND",
            "CLUSTER",
            "VERSION",
            "BY",
            "STEPS",
            "CURRENT STEP",
            "ATTEMPT",
            "INSTANCE",
            "AGE (MIN)",
            "COST SO FAR",
        ],
        [
            [
                r.get("run_id"),
                r.get("kind"),
                r.get("cluster"),
                r.get("version"),
                r.get("requested_by"),
                f"{r.get('steps_done')}/{r.get('steps_total')}",
                r.get("current_step"),
                attempt_text(r.get("attempts")),
                " ".join(x for x in (r.get("instance_id"), r.get("instance_type")) if x),
                r.get("age_minutes"),
                usd(r.get("cost_so_far_usd")),
            ]
            for r in runs
        ],
        "none",
    )
    recent = answer.get("recent_runs", [])
    table(
        f"Recent runs ({len(recent)})",
        ["RUN", "KIND", "CLUSTER", "VERSION", "BY", "OUTCOME", "FAILED STEPS", "TESTS", "ENDED", "MINUTES"],
        [
            [
                r.get("run_id"),
                r.get("kind"),
                r.get("cluster"),
                r.get("version"),
                r.get("requested_by"),
                r.get("state"),
                ",".join(r.get("failed_steps") or []),
                tests_text(r.get("tests")),
                r.get("ended_at"),
                r.get("minutes"),
            ]
            for r in recent
        ],
        "none",
    )
    history = answer.get("history")
    if history is not None:
        table(
            f"History ({len(history)}, newest first)",
            ["AT", "OPERATION", "BY", "OUTCOME", "VERSION", "DETAIL"],
            [
                [
                    h.get("at"),
                    h.get("operation"),
                    h.get("requested_by"),
                    h.get("outcome"),
                    h.get("version"),
                    h.get("detail"),
                ]
                for h in history
            ],
            "no operation in the last 400 days",
        )
    held = answer.get("held", [])
    table(
        f"Held for debugging ({len(held)})",
        ["RUN", "INSTANCE", "HELD UNTIL", "FAILED STEPS", "CONNECT"],
        [
            [
                h.get("run_id"),
                h.get("instance_id"),
                h.get("held_until"),
                ",".join(h.get("failed_steps") or []),
                h.get("connect"),
            ]
            for h in held
        ],
        "none",
    )
    sweeper = answer.get("sweeper", [])
    table(
        f"The sweeper would act on ({len(sweeper)})",
        ["ACTION", "TARGET", "REASON"],
        [[s.get("action"), s.get("target"), s.get("reason")] for s in sweeper],
        "nothing",
    )
    budgets = answer.get("budgets", [])
    month = budgets[0].get("month") if budgets else None
    table(
        f"Spend this month ({month}, UTC, estimated)",
        ["PROFILE", "SPENT", "BUDGET", "OF BUDGET", "CLUSTERS", "RUNS"],
        [
            [
                b.get("profile"),
                usd(b.get("spent_usd")),
                usd(b.get("budget_usd")) if b.get("budget_usd") is not None else "no budget",
                "-" if b.get("percent_of_budget") is None else f"{b.get('percent_of_budget')}%",
                usd(b.get("clusters_usd")),
                usd(b.get("runs_usd")),
            ]
            for b in budgets
        ],
        "no profile",
    )
    images = answer.get("runner_images", [])
    table(
        f"Runner images ({len(images)}, newest first)",
        ["IMAGE", "ARCHITECTURE", "STATE", "AGE (DAYS)", "CURRENT PLAN", "MADE BY RUN"],
        [
            [
                i.get("image_id"),
                i.get("architecture"),
                i.get("state"),
                i.get("age_days"),
                "yes" if i.get("current_plan") else "no",
                i.get("run_id"),
            ]
            for i in images
        ],
        "none: TEST runs install their tools (make runner-image makes one)",
    )
    errors = answer.get("launch_errors", [])
    table(
        f"Launch errors, last 7 days ({len(errors)})",
        ["INSTANCE TYPE", "MARKET", "CODE", "COUNT", "LAST AT"],
        [[e.get("instance_type"), e.get("market"), e.get("code"), e.get("count"), e.get("last_at")] for e in errors],
        "none: every launch went through, and no instance was interrupted",
    )
    boots = answer.get("boot_times", [])
    table(
        f"Time to start, last 7 days ({len(boots)} types)",
        ["INSTANCE TYPE", "BOOTS", "MEDIAN S", "SLOWEST S"],
        [[b.get("instance_type"), b.get("boots"), b.get("median_seconds"), b.get("slowest_seconds")] for b in boots],
        "no instance began a run in the last 7 days",
    )
    prices = answer.get("prices") or {}
    print(
        f"Costs from the catalog's prices of {prices.get('as_of')} ({prices.get('basis')}); runs use spot "
        f"instances, so their costs are upper bounds. As of {answer.get('at')}."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("function", choices=FUNCTIONS)
    parser.add_argument("--payload")
    parser.add_argument("--cluster")
    parser.add_argument("--version")
    parser.add_argument("--at")
    parser.add_argument("--ttl")
    parser.add_argument("--run-id")
    parser.add_argument("--wait-seconds")
    parser.add_argument("--hold")
    parser.add_argument("--architecture")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--local", action="store_true")
    parser.add_argument("--follow", action="store_true")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    call = invoke_local if args.local else invoke_aws
    try:
        payload = build_payload(args)
        ok, answer = call(args.function, payload)
        printed: set = set()
        poll = int(args.wait_seconds) if args.wait_seconds is not None else POLL_WAIT_SECONDS
        while args.follow and ok and isinstance(answer, dict) and answer.get("status") == "running":
            report_progress(answer, printed)
            print(f"run {answer.get('run_id')} is still running; waiting", file=sys.stderr)
            event = {"run_id": answer["run_id"], "wait_seconds": poll}
            try:
                ok, answer = call(args.function, json.dumps(event).encode())
            except KeyboardInterrupt:
                stopped_following(args, answer["run_id"])
                return 130
        if args.follow and isinstance(answer, dict):
            report_progress(answer, printed)
    except InvocationFailed as error:
        print(json.dumps({"errorType": "InvocationFailed", "errorMessage": str(error)}, indent=2))
        return 2
    except ValueError as error:
        print(
            json.dumps({"errorType": "InvocationFailed", "errorMessage": f"the answer is not JSON: {error}"}, indent=2)
        )
        return 2
    if args.table and ok and isinstance(answer, dict):
        print_status(answer)
    else:
        print(json.dumps(answer, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
