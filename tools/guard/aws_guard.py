"""What AWS would refuse, checked on every request that reaches the local AWS emulator.

The emulator accepts requests AWS refuses (oversized user-data, over-long tokens, ...), and the
Rust SDK checks no constraint of its models. So tools/moto_server.py hands every request to
`check` before moto sees it: the request is identified (service and operation) and read back
into the operation's input with botocore's own models (aws_wire.py), then checked against
(aws_limits.py)

- the model: required members, enums, lengths, ranges and patterns (AWS's published models, as
  botocore ships them; patterns must match the whole value, as the services apply them);
- the documented limits the models do not carry (LIMITS, each with its source).

A request that cannot be identified is a finding too, so nothing passes unchecked. Findings are
appended as JSON lines to the file named by PROVISIONER_AWS_GUARD_LOG; `python tools/aws_guard.py
report LOG` prints the tally and fails on any finding (make test runs it after the end-to-end
tests). tools/test_aws_guard.py plants a violation of every rule and shows each is caught.
"""

import json
import os
import sys
import threading
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import asdict, dataclass, field

from guard.aws_limits import LIMITS, Finding, check_model, check_updated_item, dynamodb_item_size  # noqa: F401 (moto_server)
from guard.aws_wire import Request, signing_name, identify, parse, region_of  # noqa: F401 (moto_server, the tests)


@dataclass
class Checked:
    service: str = ""
    operation: str = ""
    agent: str = ""
    findings: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    # For a DynamoDB read: the items it read (a Scan's or Query's scanned items), which the
    # benchmark's growth table sums per call.
    items_read: int | None = None


# The app name of requests a test plants to prove, end to end, that the guard refuses what AWS
# would: the report expects them refused, and fails when none was seen or one passed.
PLANTED_APP = "sliderule-guard-planted"


def _agent(headers):
    agent = headers.get("user-agent", "")
    if f"app/{PLANTED_APP}" in agent:
        return "planted"
    if "app/sliderule-provisioner" in agent:
        return "functions"
    if "aws-sdk-rust" in agent:
        return "rust-sdk"
    if agent.startswith("aws-cli") or " aws-cli/" in agent:
        return "aws-cli"
    if "Boto3" in agent or "Botocore" in agent:
        return "boto3"
    return "other"


# ---- One request --------------------------------------------------------------------------


def check(request):
    """Everything AWS would refuse in `request`. Every request is checked and recorded: the
    emulator's own interface (/moto-api/) and presigned URLs (their signature in the query, which
    AWS takes) are recorded as such; any other unsigned request is a finding, as AWS refuses it."""
    checked = Checked(agent=_agent(request.headers))
    if request.path.startswith("/moto-api"):
        checked.service, checked.operation = "emulator", request.path
        return checked
    if signing_name(request.headers) is None:
        presigned = "X-Amz-Signature=" in request.query
        checked.service, checked.operation = (
            ("presigned" if presigned else "unsigned"),
            f"{request.method} {request.path}",
        )
        if not presigned:
            checked.findings.append(
                Finding(
                    f"{request.method} {request.path}",
                    "(request)",
                    "signed (AWS refuses an unsigned request)",
                    "no Authorization header",
                )
            )
        return checked
    try:
        found = identify(request)
    except Exception as error:  # noqa: BLE001 (any failure to identify is a finding)
        checked.service, checked.operation = signing_name(request.headers) or "?", "?"
        checked.findings.append(
            Finding(f"{checked.service} ?", "(request)", "identified as an AWS operation", str(error))
        )
        return checked
    if found is None:
        return None
    model, operation, protocol, *labels = found
    checked.service, checked.operation = model.service_name, operation.name
    name = f"{model.metadata.get('serviceId', model.service_name)} {operation.name}"
    try:
        params = parse(operation, protocol, request, labels[0] if labels else None)
    except (ValueError, ElementTree.ParseError) as error:
        checked.findings.append(Finding(name, "(body)", f"a {protocol} body", str(error)))
        return checked
    if operation.input_shape is not None:
        check_model(operation.input_shape, params, "", checked.findings, name)
    limit = LIMITS.get((model.service_name, operation.name))
    if limit:
        checked.findings += limit(params, name)
    checked.params = params
    return checked


# ---- The log and its report -----------------------------------------------------------------

_log_lock = threading.Lock()


def dynamodb_items_read(operation: str, body: bytes) -> int | None:
    """How many items a DynamoDB read answered with `body` read: None for another operation."""
    if operation not in ("GetItem", "Scan", "Query", "BatchGetItem"):
        return None
    try:
        answer = json.loads(body or b"{}")
    except ValueError:
        return None
    if operation == "GetItem":
        return 1 if answer.get("Item") else 0
    if operation == "BatchGetItem":
        return sum(len(items) for items in answer.get("Responses", {}).values())
    return int(answer.get("ScannedCount", answer.get("Count", 0)))


def record(checked, path=None):
    path = path or os.environ.get("PROVISIONER_AWS_GUARD_LOG")
    if not path or checked is None:
        return
    line = {
        "service": checked.service,
        "operation": checked.operation,
        "agent": checked.agent,
        "findings": [asdict(f) for f in checked.findings],
    }
    if checked.items_read is not None:
        line["items_read"] = checked.items_read
    with _log_lock, open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")


def report(path, at_least=0, planted=0):
    """Prints the tally of a guard log; 1 when any request would have been refused, when fewer
    than `at_least` requests were recorded (something stopped handing them to the guard), or when
    fewer than `planted` planted violations were seen refused (or one passed)."""
    if not os.path.exists(path):
        print(f"aws-guard: no requests were recorded ({path} is missing)", file=sys.stderr)
        return 1
    requests, by_agent, operations, findings = 0, Counter(), Counter(), []
    planted_caught, planted_passed = 0, []
    with open(path, encoding="utf-8") as log:
        for line in log:
            entry = json.loads(line)
            requests += 1
            by_agent[entry["agent"]] += 1
            operations[f"{entry['service']} {entry['operation']}"] += 1
            if entry["agent"] == "planted":
                if entry["findings"]:
                    planted_caught += 1
                else:
                    planted_passed.append(f"{entry['service']} {entry['operation']}")
                continue
            findings += [(entry["agent"], Finding(**f)) for f in entry["findings"]]
    agents = ", ".join(f"{count} from {agent}" for agent, count in by_agent.most_common())
    print(
        f"aws-guard: {requests} requests to the emulator ({agents}), {len(operations)} operations, checked against AWS's models and limits"
    )
    distinct = sorted({(agent, str(f)) for agent, f in findings})
    for agent, text in distinct:
        print(f"  refused by AWS ({agent}): {text}")
    print(f"aws-guard: {len(findings)} requests AWS would refuse ({len(distinct)} distinct)")
    failed = bool(findings)
    if requests < at_least:
        print(
            f"aws-guard: only {requests} requests were recorded, fewer than the {at_least} the suite sends: is the guard still handed every request?",
            file=sys.stderr,
        )
        failed = True
    if planted:
        print(f"aws-guard: {planted_caught} planted violation(s) sent through the emulator were refused")
    if planted_caught < planted or planted_passed:
        print(
            f"aws-guard: the planted violations were not all refused (expected {planted}, refused {planted_caught}, passed: {planted_passed})",
            file=sys.stderr,
        )
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="the tally of a guard log")
    parser.add_argument("command", choices=["report"])
    parser.add_argument("log")
    parser.add_argument("--at-least", type=int, default=0, help="fail when fewer requests were recorded")
    parser.add_argument("--planted", type=int, default=0, help="planted violations that must have been refused")
    arguments = parser.parse_args()
    sys.exit(report(arguments.log, arguments.at_least, arguments.planted))
