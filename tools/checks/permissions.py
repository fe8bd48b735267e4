"""Checks that each function's role in template.yaml allows every AWS call the function made on
the local stack: the emulator does not enforce IAM, so a missing action would first fail in an
account. Reads the "AWS calls" events the functions log once per invocation (in the Lambda
emulator's log), maps each `Service.Operation` to its IAM action, and matches it against the
actions the function's role allows (its inline policies and the template's managed policies it
attaches; both branches of an `Fn::If`). Also fails when a function made no invocation at all,
so every function is checked.

usage: PYTHONPATH=tools python -m checks.permissions LAMBDA_LOG

Runs with cfn-lint's YAML loader (in .venv)."""

import fnmatch
import re
import sys
from pathlib import Path

from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
# The IAM service prefix of each SDK service name the call log uses; IAM action names are the
# API operation names for these services.
IAM_PREFIX = {
    "CloudFormation": "cloudformation",
    "Scheduler": "scheduler",
    "DynamoDB": "dynamodb",
    "EC2": "ec2",
    "SSM": "ssm",
    "ECR": "ecr",
    "SNS": "sns",
    "STS": "sts",
}
CALLS = re.compile(
    r'AWS calls function="(?P<function>[a-z_]+)" aws_calls=\d+ operations=(?P<operations>[A-Za-z0-9. ]*)'
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def branches(node):
    """Statements, with an Fn::If's two branches both counted and AWS::NoValue dropped."""
    if isinstance(node, list):
        for item in node:
            yield from branches(item)
    elif isinstance(node, dict) and "Fn::If" in node:
        yield from branches(node["Fn::If"][1:])
    elif isinstance(node, dict) and node != {"Ref": "AWS::NoValue"}:
        yield node


def allowed_actions(resources: dict, role_id: str) -> list[str]:
    role = resources[role_id]["Properties"]
    documents = [policy["PolicyDocument"] for policy in role.get("Policies", [])]
    for arn in role.get("ManagedPolicyArns", []):
        if isinstance(arn, dict) and "Ref" in arn:
            documents.append(resources[arn["Ref"]]["Properties"]["PolicyDocument"])
    actions = []
    for document in documents:
        for statement in branches(document["Statement"]):
            if statement.get("Effect") == "Allow":
                action = statement["Action"]
                actions.extend(action if isinstance(action, list) else [action])
    return actions


def function_roles() -> dict[str, list[str]]:
    """Function name (as it logs itself) → the actions its role allows."""
    template, problems = decode(str(ROOT / "template.yaml"))
    if problems:
        raise SystemExit(f"check-permissions: template.yaml does not parse: {problems}")
    resources = template["Resources"]
    roles = {}
    for resource in resources.values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        properties = resource["Properties"]
        name = properties["FunctionName"]["Fn::Sub"].split("}-", 1)[1]
        role_id = properties["Role"]["Fn::GetAtt"][0]
        roles[name] = allowed_actions(resources, role_id)
    return roles


def main(log_file: str) -> int:
    roles = function_roles()
    made: dict[str, set[str]] = {name: set() for name in roles}
    invoked: set[str] = set()
    for line in Path(log_file).read_text(errors="replace").splitlines():
        match = CALLS.search(ANSI.sub("", line))
        if not match:
            continue
        function = match["function"]
        if function not in roles:
            print(f"check-permissions: {function} logged calls but the template has no such function", file=sys.stderr)
            return 1
        invoked.add(function)
        made[function].update(match["operations"].split())
    failures = [
        f"{name} was never invoked on the local stack, so its permissions went unchecked"
        for name in sorted(set(roles) - invoked)
    ]
    for name, operations in sorted(made.items()):
        for operation in sorted(operations):
            service, _, action = operation.partition(".")
            wanted = f"{IAM_PREFIX.get(service, service.lower())}:{action}"
            if not any(fnmatch.fnmatchcase(wanted.lower(), pattern.lower()) for pattern in roles[name]):
                failures.append(f"{name} calls {operation}, which its role does not allow ({wanted})")
    for failure in failures:
        print(f"check-permissions: {failure}", file=sys.stderr)
    checked = sum(len(operations) for operations in made.values())
    print(
        f"check-permissions: {len(roles)} functions, {checked} distinct calls checked against their roles, "
        f"{len(failures)} problem(s)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sys.exit(main(sys.argv[1]))
