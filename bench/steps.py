"""Steps side by side: the shipped TEST script played in the project's sandbox (tools/sandbox/stub,
over a fixture checkout), each step's stub call taking its time from the reference table below,
scaled down. Prints the run's wall time next to the sum of the steps and the critical path of the
plan's `needs` graph (what no scheduler can beat), and the share of the critical path the wall
time is over it.

Run alone with `python bench/steps.py`; `make bench` includes it."""

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What each TEST step takes on a real instance, in minutes, as best we know it (an m7g.2xlarge, a
# cluster already up; the package and environment steps from the mirrors, the build and suites
# from the repository's CI), and the stub call that carries its time. Estimates, kept here.
REFERENCE_MINUTES = {
    "checkout": (0.5, "git clone"),
    "install-tools": (4.0, "dnf install -y -q git make"),
    "ecr-login": (0.1, "docker login"),
    "pull-build-environment": (2.0, "docker pull"),
    "fetch-data": (1.0, "s3 cp --recursive"),
    "wait-for-cluster": (0.2, "discovery/status"),
    "python-environment": (4.0, "env create --quiet --yes --name sliderule"),
    "python-client-pytests": (12.0, "--name sliderule pytest"),
    "nodejs-client-jests": (7.0, "npx jest"),
    "debug-build": (25.0, "pipefail -c make config-debug"),
    "lua-selftests": (10.0, "pipefail -c make selftest"),
    "ams-pytests": (3.0, "--name ams pytest"),
    "manager-pytests": (3.0, "--name manager make test"),
    "provisioner-pytests": (2.0, "--name provisioner pytest"),
}
# Seconds of the play per real minute. Each step costs the scheduler and its reports a fixed
# fraction of a second in the sandbox (a few seconds of AWS CLI calls on an instance, against
# steps of minutes); scaled harder, that fixed cost would pass for the plan's.
SCALE = 0.5
# The target: the wall time within 10 % of the critical path.
TARGET_OVER_CRITICAL = 0.10


def plan_of(kind: str, image: bool = False) -> dict:
    output = subprocess.run(
        ["cargo", "run", "--quiet", "-p", "provisioner-core", "--example", "run_script", kind]
        + (["image"] if image else []),
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output)


def stub_times(plan_steps: list[dict]) -> list[tuple[float, str]]:
    """Each step's stub call and its scaled time; one the table does not know takes none."""
    times = []
    for step in plan_steps:
        minutes, pattern = REFERENCE_MINUTES.get(step["name"], (0.0, ""))
        if pattern:
            # fetch-data copies two folders: its time is split between the two calls.
            calls = 2 if step["name"] == "fetch-data" else 1
            times.append((minutes * SCALE / calls, pattern))
    return times


def critical_path(steps: list[dict], seconds: dict[str, float]) -> float:
    """The longest chain of `needs` by the steps' times: the plan's steps come after what they need."""
    finish: dict[str, float] = {}
    for step in steps:
        start = max((finish[need] for need in step["needs"]), default=0.0)
        finish[step["name"]] = start + seconds[step["name"]]
    return max(finish.values())


def play(layout: str = "D", image: bool = False) -> dict:
    """One TEST run played over a `layout` checkout, booted from a runner image when `image`."""
    plan = plan_of("test", image)
    sandbox = Path(tempfile.mkdtemp(prefix="provisioner-bench-steps-"))
    try:
        subprocess.run([str(ROOT / "tools/simulate-instance"), "--stubs", str(sandbox)], check=True)
        # Reports and logs go nowhere: what is timed is the steps and their scheduling.
        shutil.copy(ROOT / "tools/sandbox/stub", sandbox / "bin" / "aws")
        subprocess.run(
            [str(ROOT / "tools/sandbox/fixture-repo"), layout, str(sandbox / "fixture")],
            check=True,
            env={"SANDBOX": str(sandbox), "PATH": "/usr/bin:/bin"},
        )
        (sandbox / "takes").write_text(
            "".join(f"{seconds:.3f} {pattern}\n" for seconds, pattern in stub_times(plan["steps"]))
        )
        (sandbox / "user-data.sh").write_text(plan["script"])
        environment = {
            "PATH": f"{sandbox / 'bin'}:/usr/bin:/bin",
            "HOME": str(sandbox),
            "SANDBOX": str(sandbox),
            "PROVISIONER_WORK_DIR": str(sandbox / "work"),
            "PROVISIONER_DATA_DIR": str(sandbox / "data"),
            "PROVISIONER_DISCOVERY_TIMEOUT_SECONDS": "0",
            # The steps run as this user: the sandbox makes no step user (as simulate-instance).
            "PROVISIONER_STEP_USER": pwd.getpwuid(os.getuid()).pw_name,
        }
        started = time.monotonic()
        subprocess.run(
            ["bash", str(sandbox / "user-data.sh")],
            env=environment,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wall = time.monotonic() - started
        ended = {path.name: path.read_text().splitlines()[0] for path in (sandbox / "work/logs/ended").iterdir()}
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)
    # A step that does not apply to the layout, or that the runner image holds, takes no time.
    seconds = {
        step["name"]: (
            REFERENCE_MINUTES.get(step["name"], (0.0, ""))[0] * SCALE
            if ended.get(step["name"]) in ("passed", "failed") and not step.get("held")
            else 0.0
        )
        for step in plan["steps"]
    }
    not_passed = {name: status for name, status in ended.items() if status not in ("passed", "not_applicable")}
    if not_passed:
        raise SystemExit(f"bench: the played TEST run did not pass: {not_passed}")
    critical = critical_path(plan["steps"], seconds)
    return {
        "runner_image": image,
        "held": sorted(step["name"] for step in plan["steps"] if step.get("held")),
        "layout": layout,
        "parallelism": plan["parallelism"],
        "seconds_per_minute": SCALE,
        "wall_seconds": wall,
        "sum_seconds": sum(seconds.values()),
        "critical_path_seconds": critical,
        "over_critical_path": wall / critical - 1,
        "not_applicable": sorted(name for name, status in ended.items() if status == "not_applicable"),
    }


def play_both(layout: str = "D") -> dict:
    """The run as it installs its tools, and as it boots from a runner image."""
    return {"without_image": play(layout), "with_image": play(layout, image=True)}


def render(both: dict) -> list[str]:
    plain, imaged = both["without_image"], both["with_image"]
    scale = plain["seconds_per_minute"]

    def row(name: str, figures: dict) -> str:
        over = figures["over_critical_path"]
        met = "met" if over <= TARGET_OVER_CRITICAL else "**missed**"
        return (
            f"| {name} | {figures['wall_seconds']:.2f} | {figures['sum_seconds']:.2f} | "
            f"{figures['critical_path_seconds']:.2f} | {100 * over:.1f} % | {figures['wall_seconds'] / scale:.0f} | {met} |"
        )

    return [
        "",
        "## Steps side by side",
        "",
        f"The shipped TEST plan played in the sandbox over a layout {plain['layout']} checkout, each step's stub "
        f"taking its real",
        f"minutes from the reference table in `bench/steps.py` at {scale} s per minute; reports are stubbed. "
        f"Parallelism {plain['parallelism']};",
        f"not applicable to the layout: {', '.join(plain['not_applicable']) or 'none'}. From a runner image, "
        f"{', '.join(imaged['held'])} pass at once",
        "(the image's warm package caches are not counted: the client steps keep their times).",
        "",
        "| runner image | wall s | sum of steps s | critical path s | wall over the critical path | real minutes | "
        "target ≤ 10 % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        row("none", plain),
        row("with", imaged),
        "",
        f"In real time: {plain['wall_seconds'] / scale:.0f} minutes instead of the {plain['sum_seconds'] / scale:.0f} "
        f"the steps take one after another; {imaged['wall_seconds'] / scale:.0f} from a runner image.",
    ]


if __name__ == "__main__":
    result = play_both()
    print("\n".join(render(result)))
    json.dump(result, sys.stderr, indent=2)
