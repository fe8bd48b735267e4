"""`make bench`: what a Lambda user pays for each function, measured on this machine.

Cold invocations: each release binary is spawned with AWS_LAMBDA_RUNTIME_API pointing at a small
Runtime API host below, which serves one event and times spawn -> first `invocation/next` (init)
-> response (invoke); peak RSS is read from /proc before the process is stopped. The functions talk
to a local AWS emulator started here; the AWS calls of each invocation come from the SDK
interceptor's log event ("AWS calls"). Warm throughput serves many events to one process. The wait
loop's completion latency comes from `wait-latency` (fakes under paused time). The TEST plan's
steps side by side are timed in the sandbox (`steps.py`). What a request costs as the table grows
to 100,000 records is `growth.py`, which `make bench` runs next.

Prints a table and writes bench/results.md and bench/results.json."""

import http.server
import json
import os
import platform
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import steps

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
SAM_VENV_PYTHON = ROOT / ".venv-sam" / "bin" / "python"
RELEASE = ROOT / "target" / "release"
# Every directory under functions/ is one function, its binary named provisioner-<name with dashes>.
FUNCTIONS = sorted(
    f"provisioner-{path.name.replace('_', '-')}" for path in (ROOT / "functions").iterdir() if path.is_dir()
)
COLD_RUNS = int(os.environ.get("BENCH_COLD_RUNS", "7"))
WARM_INVOCATIONS = int(os.environ.get("BENCH_WARM_INVOCATIONS", "300"))
RUNTIME_PREFIX = "/2018-06-01/runtime"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class QuietServer(http.server.ThreadingHTTPServer):
    """Connections dropped by a stopped function are expected, not worth a traceback."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class RuntimeApi:
    """The Lambda Runtime API for one process: hands out queued events and records answers."""

    def __init__(self) -> None:
        self.events: "queue.Queue[tuple[str, dict, int]]" = queue.Queue()
        self.answers: "queue.Queue[tuple[float, str, str, dict]]" = queue.Queue()
        self.first_next: float | None = None
        self.stopping = threading.Event()
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != f"{RUNTIME_PREFIX}/invocation/next":
                    return self.reply(404)
                if api.first_next is None:
                    api.first_next = time.perf_counter()
                while not api.stopping.is_set():
                    try:
                        request_id, event, deadline_ms = api.events.get(timeout=0.05)
                        break
                    except queue.Empty:
                        continue
                else:
                    return self.reply(500)
                self.reply(
                    200,
                    json.dumps(event).encode(),
                    {
                        "Lambda-Runtime-Aws-Request-Id": request_id,
                        "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                        "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:bench",
                        "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
                    },
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = self.path[len(RUNTIME_PREFIX) :].strip("/").split("/")
                now = time.perf_counter()
                if parts[:2] == ["init", "error"]:
                    api.answers.put((now, "", "init_error", json.loads(body or b"{}")))
                elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                    api.answers.put((now, parts[1], parts[2], json.loads(body or b"null")))
                else:
                    return self.reply(404)
                self.reply(202, b"{}")

        self.server = QuietServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def aws_calls_of(log: str) -> list[list[str]]:
    """The operations of each invocation, from the functions' JSON log events."""
    found = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        fields = record.get("fields", record)
        if fields.get("message") == "AWS calls":
            found.append([op for op in str(fields.get("operations", "")).split(" ") if op])
    return found


class Bench:
    def __init__(self, environment: dict) -> None:
        self.environment = environment

    def invoke(self, function: str, events: list[dict], deadline_seconds: float = 900) -> dict:
        """Spawns `function`, serves it `events` one after another, and times it."""
        api = RuntimeApi()
        env = dict(self.environment)
        env.update(
            {
                "AWS_LAMBDA_RUNTIME_API": api.address,
                "AWS_LAMBDA_FUNCTION_NAME": function,
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function}",
                "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
                "AWS_LAMBDA_LOG_FORMAT": "JSON",
                "AWS_LAMBDA_LOG_LEVEL": "INFO",
            }
        )
        for index, event in enumerate(events):
            api.events.put((f"bench-{index}", event, int((time.time() + deadline_seconds) * 1000)))
        with tempfile.TemporaryFile(mode="w+") as log:
            spawned = time.perf_counter()
            process = subprocess.Popen([str(RELEASE / function)], env=env, stdout=log, stderr=subprocess.STDOUT)
            answers = []
            try:
                for _ in events:
                    try:
                        answer = api.answers.get(timeout=60)
                    except queue.Empty:
                        raise SystemExit(f"bench: {function} did not answer within 60 s") from None
                    answers.append(answer)
                    if answer[2] == "init_error":
                        break
                rss = peak_rss_mb(process.pid)
            finally:
                stop(process)
                api.close()
            log.seek(0)
            output = log.read()
        if any(kind != "response" for _, _, kind, _ in answers):
            raise SystemExit(f"bench: {function} failed: {answers}\n{output[-3000:]}")
        first_next = api.first_next or spawned
        return {
            "init_ms": (first_next - spawned) * 1000,
            "invoke_ms": (answers[0][0] - first_next) * 1000,
            "total_ms": (answers[0][0] - spawned) * 1000,
            "last_ms": (answers[-1][0] - spawned) * 1000,
            "peak_rss_mb": rss,
            "responses": [body for _, _, _, body in answers],
            "calls": aws_calls_of(output),
        }


def scenario_events(index: int) -> dict:
    """The cold-invocation scenarios, in order, as (function, event) on a fresh cluster name: each
    scenario sets up the next (deploy creates the cluster that destroy then deletes)."""
    cluster = f"ci-bench-{index}"

    def later(hours):
        return datetime.fromtimestamp(time.time() + hours * 3600, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    return {
        "deploy, cluster absent": ("provisioner-deploy", {"cluster": cluster}),
        "deploy, cluster running": ("provisioner-deploy", {"cluster": cluster}),
        "status": ("provisioner-status", {}),
        # Nothing is wrong (one cluster, its default schedule; earlier rounds' runs ended): it only lists.
        "sweep, nothing to do": ("provisioner-sweep", {}),
        "schedule_destroy, replacing the default": (
            "provisioner-schedule-destroy",
            {"cluster": cluster, "time_to_destroy": later(2)},
        ),
        "schedule_destroy, moved": ("provisioner-schedule-destroy", {"cluster": cluster, "time_to_destroy": later(3)}),
        "destroy, cluster present": ("provisioner-destroy", {"cluster": cluster}),
        "destroy, cluster absent": ("provisioner-destroy", {"cluster": cluster}),
        "test, run start": ("provisioner-test", {"cluster": cluster, "version": "main", "wait_seconds": 0}),
        "build, run start": ("provisioner-build", {"cluster": cluster, "version": "main", "wait_seconds": 0}),
    }


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("bench:", " ".join(command), file=sys.stderr, flush=True)
    return subprocess.run(command, cwd=ROOT, check=True, **kwargs)


def start_emulator() -> tuple[dict, dict]:
    """The AWS emulator alone, on a port and state directory of the bench's own (tools/local-stack)."""
    stack = dict(
        os.environ, LOCAL_AWS_PORT=str(free_port()), LOCAL_STACK_STATE=tempfile.mkdtemp(prefix="provisioner-bench-")
    )
    run(["tools/local-stack", "aws-up"], env=stack, stdout=subprocess.DEVNULL)
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for line in (Path(stack["LOCAL_STACK_STATE"]) / "lambda.env").read_text().splitlines():
        key, _, value = line.partition("=")
        environment[key] = value
    return stack, environment


def stop_emulator(stack: dict) -> None:
    run(["tools/local-stack", "down"], env=stack, stdout=subprocess.DEVNULL)
    shutil.rmtree(stack["LOCAL_STACK_STATE"], ignore_errors=True)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB"


def main() -> None:
    run(["cargo", "build", "--release", "--quiet", *[arg for name in FUNCTIONS for arg in ("-p", name)]])
    run(["cargo", "build", "--quiet", "-p", "provisioner-bench", "--bin", "wait-latency"])

    sizes = {name: (RELEASE / name).stat().st_size / 1e6 for name in FUNCTIONS}
    stack, environment = start_emulator()
    bench = Bench(environment)
    cold: dict[str, list[dict]] = {}
    run_instances: list[str] = []
    try:
        for index in range(COLD_RUNS):
            for name, (function, event) in scenario_events(index).items():
                result = bench.invoke(function, [event], deadline_seconds=60)
                response = result["responses"][0]
                if response.get("status") not in ("success", "running"):
                    raise SystemExit(f"bench: {name} answered {response}")
                if name == "sweep, nothing to do" and response["actions"]:
                    raise SystemExit(f"bench: an idle sweep acted: {response['actions']}")
                cold.setdefault(name, []).append(result)
                if name.endswith("run start"):
                    run_instances.append(response["run_id"])
            # Both runs are cancelled (their instances terminated), so the next round's sweep has
            # nothing to do again and no profile's run cap fills up. (Terminating the instances
            # would only begin their next attempts.)
            for run_id in run_instances:
                result = bench.invoke("provisioner-cancel", [{"run_id": run_id}], deadline_seconds=60)
                outcome = result["responses"][0].get("outcome")
                if outcome != "cancelled":
                    raise SystemExit(f"bench: cancelling {run_id} answered {result['responses'][0]}")
                cold.setdefault("cancel, run active", []).append(result)
        # One warm process: the first deploy creates the cluster, every later one finds it running.
        warm = bench.invoke("provisioner-deploy", [{"cluster": "ci-bench-warm"}] * (WARM_INVOCATIONS + 1))
        if any(r.get("action") != "already_running" for r in warm["responses"][1:]):
            raise SystemExit("bench: warm deploys did not all find the cluster running")
    finally:
        stop_emulator(stack)

    warm_seconds = (warm["last_ms"] - warm["total_ms"]) / 1000
    warm_rate = WARM_INVOCATIONS / warm_seconds if warm_seconds > 0 else float("nan")
    latency = json.loads(
        subprocess.run(
            [str(ROOT / "target" / "debug" / "wait-latency")], check=True, capture_output=True, text=True
        ).stdout
    )
    user_data = json.loads(
        run(
            ["cargo", "run", "--quiet", "-p", "provisioner-core", "--example", "user_data_sizes"],
            capture_output=True,
            text=True,
        ).stdout
    )
    side_by_side = steps.play_both()

    rows = []
    for name, results in cold.items():
        if not results[0]["calls"]:
            raise SystemExit(f"bench: {name} logged no 'AWS calls' event; the call counts would be wrong")
        calls = results[0]["calls"][0]
        rows.append(
            {
                "scenario": name,
                "init_ms": statistics.median([r["init_ms"] for r in results]),
                "invoke_ms": statistics.median([r["invoke_ms"] for r in results]),
                "total_ms": statistics.median([r["total_ms"] for r in results]),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
                "aws_calls": len(calls),
                "operations": calls,
            }
        )
    report = {
        "taken": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "cold_runs": COLD_RUNS,
        "cold": rows,
        "binary_size_mb": sizes,
        "warm": {
            "function": "provisioner-deploy",
            "scenario": "deploy, cluster running",
            "invocations": WARM_INVOCATIONS,
            "per_second": warm_rate,
            "peak_rss_mb": warm["peak_rss_mb"],
        },
        "wait_latency": latency,
        "user_data": user_data,
        "steps_side_by_side": side_by_side,
    }
    markdown = render(report)
    print(markdown)
    (ROOT / "bench" / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (ROOT / "bench" / "results.md").write_text(markdown)
    print("bench: wrote bench/results.md and bench/results.json", file=sys.stderr)


# The targets, judged here so the table says which are met. Figures are never asserted.
MB_LIMIT_RSS, MB_LIMIT_BINARY, LAG_LIMIT_S, CALLS_PER_MINUTE_LIMIT, COLD_LIMIT_MS = 25, 12, 5, 20, 50


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def cold_target(row: dict) -> str:
    checks = [(f"RSS ≤ {MB_LIMIT_RSS} MB", row["peak_rss_mb"] <= MB_LIMIT_RSS)]
    if row["scenario"] in ("deploy, cluster running", "destroy, cluster absent"):
        checks.append((f"total ≤ {COLD_LIMIT_MS} ms", row["total_ms"] <= COLD_LIMIT_MS))
    if row["scenario"] == "deploy, cluster running":
        checks.append(("≤ 3 calls", row["aws_calls"] <= 3))
    if row["scenario"] == "sweep, nothing to do":
        # The 6 listings, the 4 capped slots items (ci and developers, test and build), 1 schedule.
        checks.append(("6 listings + 4 slots + 1 read per schedule, no action", row["aws_calls"] == 11))
    return ", ".join(f"{what}: {verdict(ok)}" for what, ok in checks)


def render(report: dict) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Taken {report['taken']} on {report['machine']} by `make bench`: release binaries (x86_64)",
        f"against the local AWS emulator. Cold figures are medians of {report['cold_runs']} runs; peak RSS is the",
        "largest of them. MB are 10^6 bytes.",
        "",
        "## Cold invocation, memory and AWS calls",
        "",
        "| scenario | init ms | invoke ms | total ms | peak RSS MB | AWS calls | operations | targets |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in report["cold"]:
        lines.append(
            f"| {row['scenario']} | {row['init_ms']:.1f} | {row['invoke_ms']:.1f} | {row['total_ms']:.1f} | "
            f"{row['peak_rss_mb']:.1f} | {row['aws_calls']} | {' '.join(row['operations'])} | {cold_target(row)} |"
        )
    lines += ["", "## Binary size (stripped release)", "", "| binary | MB | target ≤ 12 MB |", "| --- | ---: | --- |"]
    lines += [
        f"| {name} | {size:.2f} | {verdict(size <= MB_LIMIT_BINARY)} |"
        for name, size in report["binary_size_mb"].items()
    ]
    warm = report["warm"]
    lines += [
        "",
        "## Warm throughput",
        "",
        f"{warm['scenario']}: {warm['per_second']:.0f} invocations per second on one warm process "
        f"({warm['invocations']} invocations, peak RSS {warm['peak_rss_mb']:.1f} MB).",
        "",
        "## Wait loop completion latency",
        "",
        "Stacks that finish at random moments between 30 s and 9 min (fakes, paused time): how late the",
        "function notices, and DescribeStacks calls per minute of waiting after the create or delete.",
        "",
        "| operation | trials | lag median s | lag p95 s | lag max s | calls/min overall | calls/min worst trial | targets |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, figures in report["wait_latency"].items():
        lag, rate = figures["lag_seconds"], figures["describe_calls_per_minute"]
        targets = (
            f"lag ≤ {LAG_LIMIT_S} s: {verdict(lag['max'] <= LAG_LIMIT_S)}, "
            f"≤ {CALLS_PER_MINUTE_LIMIT}/min: {verdict(rate['max'] <= CALLS_PER_MINUTE_LIMIT)}"
        )
        lines.append(
            f"| {name} | {figures['trials']} | {lag['median']:.2f} | {lag['p95']:.2f} | {lag['max']:.2f} | "
            f"{rate['overall']:.1f} | {rate['max']:.1f} | {targets} |"
        )
    lines += [
        "",
        "## Run user-data",
        "",
        "Each kind's user-data for the shipped plans, the longest valid cluster name and version and every",
        "setting at the longest it may be (random characters): the script, and what EC2 receives (gzip,",
        "which cloud-init unpacks). EC2 allows 16,384 bytes before base64; the tests hold every kind to",
        "the budget, 80 % of that.",
        "",
        "| kind | script bytes | user-data bytes | budget | limit | headroom to the limit |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {k['kind']} | {k['script_bytes']:,} | {k['user_data_bytes']:,} | {k['budget_bytes']:,} | "
        f"{k['limit_bytes']:,} | {k['headroom_percent']:.0f} % |"
        for k in report.get("user_data", [])
    ]
    if "steps_side_by_side" in report:
        lines += steps.render(report["steps_side_by_side"])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
