#!/usr/bin/env python3
"""Prints, as Markdown for a GitHub job summary, every step of the newest run of each KIND on
CLUSTER (its status, duration and log location) and, for a TEST run, what changed since the
previous run of its version: new failures first, then those still failing (since when), fixed and
flaky tests; from a `status` answer (a JSON file).

usage: run_summary.py STATUS_JSON CLUSTER KIND [KIND ...]

Exits 0 whatever it finds: a summary never fails a job. Standard library only."""

import json
import sys


def newest_run(status: dict, cluster: str, kind: str) -> dict | None:
    runs = [*status.get("runs", []), *status.get("recent_runs", [])]
    # Run ids are KIND-CLUSTER-YYYYMMDDtHHMMSS-xxxx: for one kind and cluster, newest sorts last.
    mine = sorted((r for r in runs if r.get("kind") == kind and r.get("cluster") == cluster), key=lambda r: r["run_id"])
    return mine[-1] if mine else None


def cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary(status: dict, cluster: str, kinds: list[str]) -> str:
    lines = []
    for kind in kinds:
        run = newest_run(status, cluster, kind)
        if run is None:
            lines += [f"### {kind}: no run of {cluster} found", ""]
            continue
        lines += [
            f"### {kind} run `{run['run_id']}`: {run.get('state')}",
            "",
            "| step | status | duration | log |",
            "| --- | --- | --- | --- |",
        ]
        for step in run.get("steps", []):
            what = step.get("status", "?") + (f": {step['reason']}" if step.get("reason") else "")
            seconds = step.get("duration_seconds")
            duration = "-" if seconds is None else f"{int(seconds) // 60} min {int(seconds) % 60} s"
            log = "-" if step.get("status") in ("pending", None) else f"{run.get('log_location', '')}{step['name']}.log"
            lines.append(f"| {cell(step.get('name'))} | {cell(what)} | {duration} | {cell(log)} |")
        lines.append("")
        lines += changes(run.get("tests"))
    return "\n".join(lines)


def changes(tests: dict | None) -> list[str]:
    """What changed since the run compared with, as a table: the question a nightly is read for."""
    if not tests:
        return []
    counts = tests.get("counts", {})
    compared = tests.get("compared_with")
    lines = [
        f"**Tests:** {counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, "
        f"{counts.get('skipped', 0)} skipped; "
        + (f"compared with `{compared}`" if compared else "no earlier run of this version to compare with"),
        "",
    ]
    rows = [
        ("new failure", f["id"], f["step"], "this run") for f in tests.get("failed", []) if f.get("status") == "new"
    ]
    rows += [("still failing", f["id"], f["step"], f"since `{f['since']}`") for f in tests.get("still_failing", [])]
    rows += [("fixed", test, "", "") for test in tests.get("fixed", [])]
    rows += [("flaky", test, "", "failed and passed on this commit in 14 days") for test in tests.get("flaky", [])]
    if not rows:
        return [*lines, "No test failed, and none was fixed.", ""]
    lines += ["| change | test | step | since |", "| --- | --- | --- | --- |"]
    lines += [f"| {cell(change)} | {cell(test)} | {cell(step)} | {cell(since)} |" for change, test, step, since in rows]
    return [*lines, ""]


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with open(sys.argv[1], encoding="utf-8") as answer:
            status = json.load(answer)
    except (OSError, ValueError) as error:
        print(f"(no run summary: the status answer could not be read: {error})")
        return 0
    if status.get("status") != "success":
        print(f"(no run summary: status answered {status.get('errorType')}: {status.get('errorMessage')})")
        return 0
    print(summary(status, sys.argv[2], sys.argv[3:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
