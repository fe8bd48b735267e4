"""What a request costs as the history the provisioner keeps grows: the calls, the DynamoDB items
read and the time of `deploy` (dry run and real), a run start and `status`, with 0, 10,000 and
100,000 run records and history entries seeded into the local table (as a year of nightlies and
pull requests would leave them: ended runs with their steps and attempts, each on its day's item
of ended runs, and the clusters' month items of history). The ratio of the largest table to the
empty one is printed per call; the goal is at most 1.2 for every request path, 2 for `status`.

Items read come from the emulator's request log (each DynamoDB read's items; a Scan's scanned
ones); calls from the functions' own "AWS calls" log event. Times are medians of a few
invocations of each binary, each a fresh process (as a cold Lambda).

Run by `make bench` after `run.py` (release binaries), writing bench/growth.md;
`python bench/growth.py --debug` measures the debug binaries the local stack serves, without a
release build. It takes `run.py`'s Lambda host and emulator."""

import json
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
SIZES = (0, 10_000, 100_000)
REPEATS = 5
CLUSTER = "ci-growth"
# Request paths and the goal each is judged by (largest table over empty).
GOALS = {"deploy, dry run": 1.2, "deploy, creates": 1.2, "test, run start": 1.2, "status": 2.0}
STEPS = [
    "checkout",
    "install-tools",
    "ecr-login",
    "pull-build-environment",
    "fetch-data",
    "wait-for-cluster",
    "python-environment",
    "python-client-pytests",
    "nodejs-client-jests",
    "debug-build",
    "lua-selftests",
    "ams-pytests",
    "manager-pytests",
    "provisioner-pytests",
]


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def run_item(index: int, now: datetime, rng: random.Random) -> tuple[dict, str, str, str]:
    """An ended TEST or BUILD run of the last 32 days, as the functions write it: (item, its end's
    day, its entry on that day's item of ended runs)."""
    kind = "test" if index % 2 else "build"
    cluster = f"ci-{index % 7 + 1}"
    started = now - timedelta(minutes=rng.randint(60, 32 * 24 * 60))
    ended = started + timedelta(minutes=rng.randint(10, 120))
    run_id = f"{kind}-{cluster}-{started.strftime('%Y%m%dt%H%M%S').lower()}-{index:04x}"[-60:]
    steps = {
        name: {
            "M": {
                "status": {"S": "passed"},
                "exit_code": {"N": "0"},
                "started_at": {"S": stamp(started)},
                "ended_at": {"S": stamp(ended)},
            }
        }
        for name in STEPS
    }
    attempts = [
        {
            "number": 1,
            "instance_id": f"i-{index:017x}",
            "market": "spot",
            "instance_type": "m7g.2xlarge",
            "started_at": stamp(started),
            "ended_at": stamp(ended),
            "outcome": "completed",
            "check_in_by": stamp(started + timedelta(minutes=10)),
            "deadline": stamp(started + timedelta(hours=3)),
            "log_location": f"s3://sliderule-provisioner-runs/runs/AROATESTRUNNER:i-{index:017x}/",
        }
    ]
    item = {
        "pk": {"S": f"run#{run_id}"},
        "kind": {"S": kind},
        "cluster": {"S": cluster},
        "version": {"S": "main"},
        "state": {"S": "succeeded"},
        "started_at": {"S": stamp(started)},
        "ended_at": {"S": stamp(ended)},
        "deadline": {"S": stamp(started + timedelta(hours=3))},
        "expires_at": {"S": stamp(started + timedelta(days=32, hours=3))},
        "expires_ttl": {"N": str(int((started + timedelta(days=32, hours=3)).timestamp()))},
        "step_order": {"L": [{"S": name} for name in STEPS]},
        "steps": {"M": steps},
        "attempt": {"N": "1"},
        "attempts": {"S": json.dumps(attempts)},
        "hold_minutes": {"N": "0"},
        "instance_id": {"S": f"i-{index:017x}"},
        "log_location": {"S": attempts[0]["log_location"]},
    }
    return item, ended.strftime("%Y-%m-%d"), f"{stamp(ended)} {kind} {cluster}", run_id


def seed(table, start: int, count: int, now: datetime) -> None:
    """Adds `count` ended runs and `count` history entries, numbered from `start`."""
    rng = random.Random(start)
    days: dict[str, dict[str, str]] = {}
    with table.batch_writer() as batch:
        for index in range(start, start + count):
            item, day, entry, run_id = run_item(index, now, rng)
            batch.put_item(Item=_plain(item))
            days.setdefault(day, {})[run_id] = entry
    # Each day's item of ended runs whole, as the runs' endings left it, one at a time: a busy
    # day's item is large.
    for day, entries in days.items():
        existing = table.get_item(Key={"pk": f"runs-ended#{day}"}).get("Item", {})
        table.put_item(Item={**existing, **entries, "pk": f"runs-ended#{day}"})
    # History: 1,000 entries to a cluster's month item (as a busy cluster's month holds), seven
    # clusters, month after month back from this one.
    for first in range(start, start + count, 1000):
        item = first // 1000
        cluster = f"ci-{item % 7 + 1}"
        month = (now - timedelta(days=31 * (item // 7))).strftime("%Y-%m")
        entries = {}
        for index in range(first, min(first + 1000, start + count)):
            at = now - timedelta(minutes=rng.randint(60, 28 * 24 * 60))
            entry = {"operation": "deploy", "at": stamp(at), "requested_by": "ci", "outcome": "success"}
            entries[f"{stamp(at)}#{index:08x}"] = json.dumps(entry)
        table.put_item(Item={"pk": f"history#{cluster}#{month}", "entries": entries})


def _plain(item: dict) -> dict:
    """A low-level item as the resource API takes it."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return {key: deserializer.deserialize(value) for key, value in item.items()}


def requests_since(log: Path, offset: int) -> tuple[int, int]:
    """The DynamoDB items read by the requests logged after `offset`, and the new offset."""
    with open(log, "rb") as lines:
        lines.seek(offset)
        new = lines.read()
    items = 0
    for line in new.splitlines():
        try:
            items += json.loads(line).get("items_read") or 0
        except ValueError:
            continue
    return items, offset + len(new)


def measure(bench, log: Path, function: str, event: dict) -> dict:
    """One invocation: its time, AWS calls and items read, and its answer."""
    offset = log.stat().st_size
    result = bench.invoke(function, [event], deadline_seconds=60)
    items, _ = requests_since(log, offset)
    return {
        "ms": result["invoke_ms"],
        "calls": sum(len(calls) for calls in result["calls"]),
        "items": items,
        "answer": result["responses"][0],
    }


def measure_size(bench, log: Path, invoke) -> dict[str, dict]:
    """Each request path, `REPEATS` times; the cluster and runs it makes are removed again."""
    rows: dict[str, list[dict]] = {name: [] for name in GOALS}
    for _ in range(REPEATS):
        rows["deploy, dry run"].append(measure(bench, log, "provisioner-deploy", {"cluster": CLUSTER, "dry_run": True}))
        rows["deploy, creates"].append(measure(bench, log, "provisioner-deploy", {"cluster": CLUSTER}))
        start = {"cluster": CLUSTER, "version": "main", "wait_seconds": 0}
        started = measure(bench, log, "provisioner-test", start)
        rows["test, run start"].append(started)
        rows["status"].append(measure(bench, log, "provisioner-status", {}))
        invoke("provisioner-cancel", {"run_id": started["answer"]["run_id"]})
        invoke("provisioner-destroy", {"cluster": CLUSTER})
    for name, results in rows.items():
        failed = [r["answer"] for r in results if r["answer"].get("status") not in ("success", "running", "plan")]
        if failed:
            raise SystemExit(f"growth: {name} answered {failed[0]}")
    return {
        name: {
            "ms": statistics.median(r["ms"] for r in results),
            "calls": max(r["calls"] for r in results),
            "items": max(r["items"] for r in results),
        }
        for name, results in rows.items()
    }


def growth(bench, stack_state: Path, environment: dict) -> dict:
    """The growth table's figures: per size, per request path."""
    log = stack_state / "aws-requests.jsonl"
    session = boto3.session.Session(
        aws_access_key_id=environment.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=environment.get("AWS_SECRET_ACCESS_KEY", "testing"),
        region_name=environment.get("AWS_REGION", "us-east-1"),
    )
    endpoint = environment["AWS_ENDPOINT_URL"]
    # The emulator takes its time over large items.
    patient = Config(read_timeout=600, retries={"max_attempts": 1})
    resource = session.resource("dynamodb", endpoint_url=endpoint, config=patient)
    table = resource.Table(environment["PROVISIONER_TABLE"])

    def invoke(function: str, event: dict) -> None:
        bench.invoke(function, [event], deadline_seconds=60)

    figures = {}
    seeded = 0
    now = datetime.now(timezone.utc)
    for size in SIZES:
        began = time.perf_counter()
        seed(table, seeded, size - seeded, now)
        seeded = size
        print(f"growth: {size} records seeded in {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
        figures[size] = measure_size(bench, log, invoke)
        print(f"growth: {size} records: {figures[size]}", file=sys.stderr, flush=True)
    return figures


def render(figures: dict) -> list[str]:
    sizes = list(figures)
    head = " | ".join(f"{size:,} records" for size in sizes)
    lines = [
        "## Growth: a request's cost against the history kept",
        "",
        "Run records and history entries seeded into the local table (ended runs of the last 32 days",
        "on their days' items, clusters' month items of history). Time: median of "
        f"{REPEATS} cold invocations; calls: AWS calls; items: DynamoDB items read. Ratio: the largest",
        "table over the empty one (goal: at most 1.2 for a request path, 2 for status).",
        "",
        f"| call | {head} | ratio (time) | ratio (items) | goal |",
        "| --- | " + " | ".join("---" for _ in sizes) + " | --- | --- | --- |",
    ]
    for name, goal in GOALS.items():
        cells = [figures[size][name] for size in sizes]
        first, last = cells[0], cells[-1]
        time_ratio = last["ms"] / first["ms"] if first["ms"] else float("nan")
        item_ratio = last["items"] / first["items"] if first["items"] else float("nan")
        met = "met" if time_ratio <= goal and (first["items"] == 0 or item_ratio <= goal) else "NOT met"
        shown = [f"{c['ms']:.0f} ms, {c['calls']} calls, {c['items']} items" for c in cells]
        lines.append(f"| {name} | {' | '.join(shown)} | {time_ratio:.2f} | {item_ratio:.2f} | ≤ {goal} ({met}) |")
    return lines


def main() -> None:
    import run as bench_run

    if "--debug" in sys.argv:
        bench_run.RELEASE = ROOT / "target" / "debug"
    else:
        bench_run.run(["cargo", "build", "--release", "--quiet", *[a for n in bench_run.FUNCTIONS for a in ("-p", n)]])
    stack, environment = bench_run.start_emulator()
    try:
        figures = growth(bench_run.Bench(environment), Path(stack["LOCAL_STACK_STATE"]), environment)
    finally:
        bench_run.stop_emulator(stack)
    markdown = "\n".join(render(figures)) + "\n"
    print(markdown)
    if "--debug" not in sys.argv:
        (ROOT / "bench" / "growth.md").write_text(markdown)


if __name__ == "__main__":
    main()
