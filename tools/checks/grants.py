"""Checks what the template's roles may do, condition by condition: a table of requests each role
must be refused or allowed, evaluated the way IAM evaluates identity policies (an explicit Deny
wins; else an Allow whose Action, Resource and every Condition match; else refused), with policy
variables (`${aws:userid}`) and tag conditions. The emulator enforces no IAM: this is what stands
for it. `checks.permissions` checks the other way round (every call a function made is allowed).

Each row is a request of one role, in the request context AWS would give it (resource tags, the
caller's `aws:userid`, the DynamoDB key it touches). Rows marked `open` are boundaries the template
does not draw yet: printed, not failed, until it does (then they must hold, and the mark goes).

usage: PYTHONPATH=tools python -m checks.grants [TEMPLATE]

Runs with cfn-lint's YAML loader (in .venv)."""

from __future__ import annotations

import fnmatch
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
PARTITION, REGION, ACCOUNT = "aws", "us-east-1", "123456789012"
STACK = "sliderule-provisioner"
VARIABLE = re.compile(r"\$\{([A-Za-z0-9:/_.-]+)\}")
# In a Sub, ${!X} is the text ${X}: how a policy variable is written there.
SUB_VARIABLE = re.compile(r"\$\{(!?)([A-Za-z0-9:/_.-]+)\}")


def arn_of(logical_id: str, resource: dict) -> str:
    """A stand-in ARN for `!GetAtt X.Arn` / `!Ref X`, of the resource's own service."""
    kind = resource["Type"]
    return {
        "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{logical_id}",
        "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{logical_id}",
        "AWS::S3::Bucket": f"arn:aws:s3:::{logical_id.lower()}",
        "AWS::SNS::Topic": f"arn:aws:sns:{REGION}:{ACCOUNT}:{logical_id}",
        "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{logical_id}",
        "AWS::Serverless::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{logical_id}",
    }.get(kind, f"arn:aws:{kind.split('::')[1].lower()}:{REGION}:{ACCOUNT}:{logical_id}")


class Template:
    """The template with its intrinsic functions resolved: parameters at their defaults (a
    parameter with no default at a stand-in), both branches of every `Fn::If`."""

    def __init__(self, path: Path, parameters: dict[str, str] | None = None):
        template, problems = decode(str(path))
        if problems:
            raise SystemExit(f"check-grants: {path} does not parse: {problems}")
        self.resources = template["Resources"]
        self.values = {
            "AWS::Partition": PARTITION,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::StackName": STACK,
            "AWS::URLSuffix": "amazonaws.com",
        }
        # A list parameter's Ref is a list (what Join and Select take).
        self.lists = set()
        for name, parameter in template.get("Parameters", {}).items():
            default = parameter.get("Default", f"{name.lower()}-value")
            self.values[name] = ",".join(default) if isinstance(default, list) else str(default)
            if parameter.get("Type", "").startswith(("CommaDelimitedList", "List<")):
                self.lists.add(name)
        self.values.update(parameters or {})

    def ref(self, name: str) -> str | None:
        if name == "AWS::NoValue":
            return None
        if name in self.lists:
            return [item for item in self.values[name].split(",") if item]
        if name in self.values:
            return self.values[name]
        return arn_of(name, self.resources[name])

    def get_att(self, name: str, attribute: str) -> str:
        if attribute == "RoleId":
            return f"AROA{name.upper()}"
        return arn_of(name, self.resources[name])

    def sub(self, text: str, local: dict[str, str]) -> str:
        def value(match: re.Match) -> str:
            literal, name = match[1], match[2]
            if literal:
                return f"${{{name}}}"
            if name in local:
                return local[name]
            if "." in name:
                return self.get_att(*name.split(".", 1))
            if name in self.values or name in self.resources:
                return flat_list_text(self.ref(name))
            return match[0]  # a policy variable, left for the request

        return SUB_VARIABLE.sub(value, text)

    def resolve(self, node):
        """Every value of `node` resolved; an `Fn::If` becomes the list of its two branches (each
        applies: the check holds whichever the stack takes), `AWS::NoValue` None."""
        if isinstance(node, list):
            return [self.resolve(item) for item in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((function, argument),) = node.items()
            if function == "Ref":
                return self.ref(argument)
            if function == "Fn::GetAtt":
                name, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self.get_att(name, attribute)
            if function == "Fn::Sub":
                text, local = (argument, {}) if isinstance(argument, str) else argument
                local = {key: flat(self.resolve(value)) for key, value in local.items()}
                return self.sub(text, local)
            if function == "Fn::Join":
                separator, items = argument
                return separator.join(flat_list(self.resolve(items)))
            if function == "Fn::Split":
                separator, text = argument
                return flat(self.resolve(text)).split(separator)
            if function == "Fn::Select":
                index, items = argument
                items = flat_list(self.resolve(items))
                # An empty list parameter: a stand-in, as a deployment would give a value.
                return items[int(index)] if int(index) < len(items) else f"selected-{index}"
            if function == "Fn::If":
                return [self.resolve(branch) for branch in argument[1:]]
        return {key: self.resolve(value) for key, value in node.items()}

    def statements(self, role: str) -> list[dict]:
        """Every statement of the role's inline and managed policies, resolved."""
        properties = self.resources[role]["Properties"]
        documents = [policy["PolicyDocument"] for policy in properties.get("Policies", [])]
        for arn in properties.get("ManagedPolicyArns", []):
            if isinstance(arn, dict) and "Ref" in arn:
                documents.append(self.resources[arn["Ref"]]["Properties"]["PolicyDocument"])
        # Policies of their own that attach themselves to the role.
        for resource in self.resources.values():
            attached = resource.get("Properties", {}).get("Roles", [])
            if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role} in attached:
                documents.append(resource["Properties"]["PolicyDocument"])
        found = []
        for document in documents:
            found.extend(statements_of(self.resolve(document["Statement"])))
        return found


def statements_of(node) -> list[dict]:
    if isinstance(node, list):
        return [statement for item in node for statement in statements_of(item)]
    if isinstance(node, dict) and node.get("Effect"):
        return [node]
    return []


def flat_list_text(value) -> str:
    return ",".join(value) if isinstance(value, list) else value


def flat(value) -> str:
    return value[0] if isinstance(value, list) else str(value)


def flat_list(value) -> list[str]:
    out = []
    for item in value if isinstance(value, list) else [value]:
        out.extend(flat_list(item) if isinstance(item, list) else [str(item)])
    return out


@dataclass
class Request:
    """One request of a role: its action, resource ARN and request context."""

    action: str
    resource: str
    context: dict[str, str | list[str]] = field(default_factory=dict)


def substitute(pattern: str, context: dict) -> str | None:
    """`pattern` with its policy variables filled from the context; None when one is missing
    (AWS then matches nothing)."""
    missing = False

    def value(match: re.Match) -> str:
        nonlocal missing
        known = context.get(match[1])
        if known is None or isinstance(known, list):
            missing = True
            return ""
        return known

    filled = VARIABLE.sub(value, pattern)
    return None if missing else filled


def like(value: str, pattern: str, context: dict, case: bool = True) -> bool:
    pattern = substitute(pattern, context)
    if pattern is None:
        return False
    if case:
        return fnmatch.fnmatchcase(value, pattern)
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def as_list(value) -> list:
    return flat_list(value) if isinstance(value, list) else [str(value)]


def condition_holds(operator: str, key: str, expected, context: dict) -> bool:
    qualifier, _, operator = operator.rpartition(":")
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    expected = as_list(expected)
    present = key in context
    if operator == "Null":
        return (not present) == (expected[0].lower() == "true")
    if not present:
        return qualifier == "ForAllValues" or if_exists
    values = as_list(context[key])

    def one(value: str) -> bool:
        match operator:
            case "StringEquals" | "ArnEquals":
                return any(substitute(e, context) == value for e in expected)
            case "StringLike" | "ArnLike":
                return any(like(value, e, context) for e in expected)
            case "StringEqualsIgnoreCase":
                return any((substitute(e, context) or "").lower() == value.lower() for e in expected)
            case "StringNotEquals":
                return all(substitute(e, context) != value for e in expected)
            case "StringNotLike":
                return not any(like(value, e, context) for e in expected)
            case "Bool":
                return any(e.lower() == value.lower() for e in expected)
        raise SystemExit(f"check-grants: the condition operator {operator} is not modelled")

    if qualifier == "ForAllValues":
        return all(one(value) for value in values)
    if qualifier == "ForAnyValue":
        return any(one(value) for value in values)
    return one(values[0]) if len(values) == 1 else any(one(value) for value in values)


def statement_matches(statement: dict, request: Request) -> bool:
    if "Action" in statement:
        if not any(like(request.action, a, {}, case=False) for a in as_list(statement["Action"])):
            return False
    elif any(like(request.action, a, {}, case=False) for a in as_list(statement.get("NotAction", []))):
        return False
    if "Resource" in statement:
        if not any(like(request.resource, r, request.context) for r in as_list(statement["Resource"])):
            return False
    elif any(like(request.resource, r, request.context) for r in as_list(statement.get("NotResource", []))):
        return False
    for operator, keys in statement.get("Condition", {}).items():
        for key, expected in keys.items():
            if not condition_holds(operator, key, expected, request.context):
                return False
    return True


def decide(statements: list[dict], request: Request) -> str:
    """`allowed` or `refused`, as IAM decides from identity policies alone."""
    matching = [s for s in statements if statement_matches(s, request)]
    if any(s["Effect"] == "Deny" for s in matching):
        return "refused"
    return "allowed" if any(s["Effect"] == "Allow" for s in matching) else "refused"


def instance(instance_id: str, tags: dict[str, str]) -> tuple[str, dict]:
    """An instance's ARN and, as IAM sees them, its tags."""
    arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}"
    return arn, {f"aws:ResourceTag/{key}": value for key, value in tags.items()}


def table_arn() -> str:
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/StateTable"


def log_arn(key: str) -> str:
    return f"arn:aws:s3:::runlogbucket/{key}"


def secret_arn(name: str) -> str:
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf"


# The runner roles' callers: an instance profile's session is named after its instance.
RUN_A = {"aws:userid": "AROATESTRUNNERROLE:i-0aaaaaaaaaaaaaaaa"}
RUN_B = {"aws:userid": "AROATESTRUNNERROLE:i-0bbbbbbbbbbbbbbbb"}
# A step's session of the TEST step role, taken by run A's instance.
STEP = {"aws:userid": "AROATESTSTEPROLE:step-i-0aaaaaaaaaaaaaaaa-lua-selftests"}
# CloudFormation copies a stack's tags onto the instances it makes, and adds its own.
CLUSTER_INSTANCE = instance(
    "i-0c1c1c1c1c1c1c1c1",
    {
        "sliderule:kind": "cluster",
        "sliderule:provisioner": "true",
        "aws:cloudformation:stack-name": "sliderule-cluster-ci-1",
    },
)
TEST_INSTANCE = instance("i-0aaaaaaaaaaaaaaaa", {"sliderule:kind": "test", "sliderule:provisioner": "true"})
IMAGE_INSTANCE = instance("i-0d1d1d1d1d1d1d1d1", {"sliderule:kind": "runner_image", "sliderule:provisioner": "true"})


def row(role, expected, action, resource_and_tags, context=None, why="", open_issue=False):
    resource, tags = resource_and_tags if isinstance(resource_and_tags, tuple) else (resource_and_tags, {})
    return (role, expected, Request(action, resource, {**tags, **(context or {})}), why, open_issue)


# Who may do what to whom: each row a request, what IAM must answer, and why.
ROWS = [
    # A run's instance reaches only its own run.
    row(
        "TestRunnerRole",
        "refused",
        "dynamodb:UpdateItem",
        table_arn(),
        {**RUN_A, "dynamodb:LeadingKeys": ["run#test-ci-2-20261205t120000-b0b0"]},
        "run A's instance updates run B's record",
    ),
    row(
        "TestRunnerRole",
        "refused",
        "dynamodb:UpdateItem",
        table_arn(),
        {**RUN_A, "dynamodb:LeadingKeys": [f"report#{RUN_B['aws:userid']}"]},
        "run A's instance writes run B's instance's report",
    ),
    row(
        "TestRunnerRole",
        "allowed",
        "dynamodb:UpdateItem",
        table_arn(),
        {**RUN_A, "dynamodb:LeadingKeys": [f"report#{RUN_A['aws:userid']}"]},
        "a run's instance writes its own report",
    ),
    row(
        "TestRunnerRole",
        "refused",
        "s3:PutObject",
        log_arn(f"runs/{RUN_B['aws:userid']}/checkout.log"),
        RUN_A,
        "run A's instance rewrites run B's log",
    ),
    row(
        "TestRunnerRole",
        "refused",
        "s3:PutObject",
        log_arn(f"runs/{RUN_B['aws:userid']}/{RUN_A['aws:userid']}/checkout.log"),
        RUN_A,
        "run A's instance plants a log under run B's prefix",
    ),
    row(
        "TestRunnerRole",
        "allowed",
        "s3:PutObject",
        log_arn(f"runs/{RUN_A['aws:userid']}/checkout.log"),
        RUN_A,
        "a run's instance writes its own log",
    ),
    row(
        "TestRunnerRole",
        "refused",
        "dynamodb:UpdateItem",
        table_arn(),
        {**RUN_A, "dynamodb:LeadingKeys": ["lock#ci-1"]},
        "a run's instance touches a cluster's lock",
    ),
    row(
        "CancelFunctionRole",
        "allowed",
        "dynamodb:GetItem",
        table_arn(),
        {"dynamodb:LeadingKeys": [f"report#{RUN_A['aws:userid']}"]},
        "cancel reads the run with its report",
    ),
    row(
        "CancelFunctionRole",
        "refused",
        "dynamodb:UpdateItem",
        table_arn(),
        {"dynamodb:LeadingKeys": [f"report#{RUN_A['aws:userid']}"]},
        "cancel rewrites an instance's report",
    ),
    row(
        "ClusterFunctionRole",
        "allowed",
        "dynamodb:UpdateItem",
        table_arn(),
        {"dynamodb:LeadingKeys": ["spend#ci"]},
        "deploy begins a cluster in its profile's books",
    ),
    row(
        "ClusterFunctionRole",
        "refused",
        "dynamodb:Scan",
        table_arn(),
        {},
        "a deploy's budget check reads the whole table",
    ),
    row("StatusFunctionRole", "refused", "dynamodb:Scan", table_arn(), {}, "status reads every record"),
    row("SweepFunctionRole", "allowed", "dynamodb:Scan", table_arn(), {}, "the sweeper's daily recount of the books"),
    row(
        "StatusFunctionRole",
        "allowed",
        "dynamodb:GetItem",
        table_arn(),
        {"dynamodb:LeadingKeys": ["runs-live"]},
        "status reads the live runs",
    ),
    row(
        "StatusFunctionRole",
        "refused",
        "dynamodb:UpdateItem",
        table_arn(),
        {"dynamodb:LeadingKeys": ["spend#ci"]},
        "status changes a profile's books",
    ),
    row(
        "CancelFunctionRole",
        "allowed",
        "dynamodb:UpdateItem",
        table_arn(),
        {"dynamodb:LeadingKeys": ["spend#ci"]},
        "cancel settles the run's attempt in its profile's books",
    ),
    row(
        "TestRunnerRole",
        "refused",
        "dynamodb:UpdateItem",
        table_arn(),
        {**RUN_A, "dynamodb:LeadingKeys": ["spend#ci"]},
        "a run's instance changes its profile's books",
    ),
    row(
        "TestRunnerRole",
        "refused",
        "dynamodb:DeleteItem",
        table_arn(),
        {**RUN_A, "dynamodb:LeadingKeys": ["run#test-ci-1-20261205t120000-a0a0"]},
        "a run's instance deletes a record",
    ),
    row(
        "TestRunnerRole", "refused", "ec2:CreateTags", TEST_INSTANCE, RUN_A, "a run's instance moves its own expiry tag"
    ),
    row(
        "BuildRunnerRole",
        "refused",
        "ec2:TerminateInstances",
        TEST_INSTANCE,
        RUN_B,
        "a run's instance ends another run's instance",
    ),
    row(
        "TestRunnerRole",
        "refused",
        "ssm:SendCommand",
        CLUSTER_INSTANCE,
        RUN_A,
        "a run's instance runs a command on a cluster's instance",
    ),
    row(
        "TestRunnerRole",
        "refused",
        "cloudformation:DeleteStack",
        f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/sliderule-cluster-ci-1/x",
        RUN_A,
        "a run's instance deletes a cluster",
    ),
    # Secrets reach only what uses them.
    row(
        "BuildRunnerRole",
        "refused",
        "secretsmanager:GetSecretValue",
        secret_arn("localhost/earthdata"),
        RUN_B,
        "a BUILD instance reads the selftests' credentials",
    ),
    row(
        "TestRunnerRole",
        "refused",
        "secretsmanager:GetSecretValue",
        secret_arn("sliderule/deploy-key"),
        RUN_A,
        "a TEST instance reads a secret not its own",
    ),
    row(
        "TestRunnerRole",
        "refused",
        "sts:AssumeRole",
        f"arn:aws:iam::{ACCOUNT}:role/BuildRunnerRole",
        RUN_A,
        "a TEST instance takes the BUILD runner's credentials",
    ),
    row(
        "TestRunnerRole",
        "refused",
        "ecr:PutImage",
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/sliderule",
        RUN_A,
        "a TEST instance pushes a cluster image",
    ),
    row(
        "TestRunnerRole",
        "refused",
        "secretsmanager:GetSecretValue",
        secret_arn("localhost/earthdata"),
        RUN_A,
        "a TEST instance's own role reads the selftests' credentials",
    ),
    row(
        "TestRunnerRole",
        "allowed",
        "sts:AssumeRole",
        f"arn:aws:iam::{ACCOUNT}:role/TestStepRole",
        RUN_A,
        "a TEST instance takes the step role for a step that reads cloud data",
    ),
    row(
        "BuildRunnerRole",
        "refused",
        "sts:AssumeRole",
        f"arn:aws:iam::{ACCOUNT}:role/TestStepRole",
        RUN_B,
        "a BUILD instance takes the TEST step role",
    ),
    row(
        "TestStepRole",
        "allowed",
        "secretsmanager:GetSecretValue",
        secret_arn("localhost/earthdata"),
        STEP,
        "the selftests read their credentials",
    ),
    row(
        "TestStepRole",
        "allowed",
        "s3:GetObject",
        "arn:aws:s3:::sliderule-public/data/test.h5",
        STEP,
        "the selftests read public data",
    ),
    row(
        "TestStepRole",
        "refused",
        "secretsmanager:GetSecretValue",
        secret_arn("ci/github-token"),
        STEP,
        "a step given cloud data reads the GitHub token",
    ),
    row(
        "TestStepRole",
        "refused",
        "dynamodb:UpdateItem",
        table_arn(),
        {**STEP, "dynamodb:LeadingKeys": [f"report#{RUN_A['aws:userid']}"]},
        "a step given cloud data writes its instance's report (a forged outcome)",
    ),
    row(
        "TestStepRole",
        "refused",
        "s3:PutObject",
        log_arn(f"runs/{RUN_A['aws:userid']}/checkout.log"),
        STEP,
        "a step given cloud data rewrites its run's logs",
    ),
    row(
        "BuildRunnerRole",
        "allowed",
        "ecr:PutImage",
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/sliderule",
        RUN_B,
        "a BUILD instance pushes the cluster images",
    ),
    row(
        "BuildRunnerRole",
        "refused",
        "ecr:PutImage",
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/sliderule-buildenv",
        RUN_B,
        "a BUILD instance overwrites the build environment",
    ),
    # Run Command only on clusters' instances.
    row(
        "ClusterFunctionRole",
        "refused",
        "ssm:SendCommand",
        TEST_INSTANCE,
        {},
        "the destroy role sends a command to a run's instance",
    ),
    row(
        "ClusterFunctionRole",
        "allowed",
        "ssm:SendCommand",
        CLUSTER_INSTANCE,
        {},
        "the destroy role saves a cluster's logs",
    ),
    row(
        "SweepFunctionRole",
        "refused",
        "ssm:SendCommand",
        IMAGE_INSTANCE,
        {},
        "the sweeper sends a command to an image run's instance",
    ),
    # Images only of image runs' instances.
    row(
        "RunnerImageFunctionRole",
        "refused",
        "ec2:CreateImage",
        CLUSTER_INSTANCE,
        {},
        "the image role images a cluster's instance",
    ),
    row(
        "RunnerImageFunctionRole",
        "refused",
        "ec2:CreateImage",
        TEST_INSTANCE,
        {},
        "the image role images a TEST instance",
    ),
    row(
        "RunnerImageFunctionRole",
        "allowed",
        "ec2:CreateImage",
        IMAGE_INSTANCE,
        {},
        "the image role images its run's instance",
    ),
    # Termination only of run and image instances (a cluster goes as a whole stack).
    row(
        "SweepFunctionRole",
        "refused",
        "ec2:TerminateInstances",
        CLUSTER_INSTANCE,
        {},
        "the sweeper ends a cluster's instance",
    ),
    row(
        "SweepFunctionRole",
        "allowed",
        "ec2:TerminateInstances",
        TEST_INSTANCE,
        {},
        "the sweeper ends a run's instance left behind",
    ),
    row(
        "TestFunctionRole",
        "refused",
        "ec2:TerminateInstances",
        CLUSTER_INSTANCE,
        {},
        "the TEST function ends a cluster's instance",
    ),
    row(
        "CancelFunctionRole",
        "refused",
        "ec2:TerminateInstances",
        CLUSTER_INSTANCE,
        {},
        "cancel ends a cluster's instance",
    ),
]


def check(template: Template) -> tuple[list[str], list[str]]:
    """(failures, open rows that do not hold yet)."""
    failures, still_open = [], []
    for role, expected, request, why, open_issue in ROWS:
        if role not in template.resources:
            failures.append(f"{role}: the template has no such role ({why})")
            continue
        decided = decide(template.statements(role), request)
        line = f"{role} {request.action} on {request.resource}: {decided}, must be {expected} ({why})"
        if decided == expected:
            if open_issue:
                failures.append(f"{line}: it holds now; drop its open mark")
        elif open_issue:
            still_open.append(line)
        else:
            failures.append(line)
    return failures, still_open


def main(path: str) -> int:
    failures, still_open = check(Template(Path(path)))
    for line in still_open:
        print(f"check-grants: open: {line}")
    for line in failures:
        print(f"check-grants: {line}", file=sys.stderr)
    held = len(ROWS) - len(failures) - len(still_open)
    print(
        f"check-grants: {len(ROWS)} requests of {len({r[0] for r in ROWS})} roles evaluated with their conditions: "
        f"{held} hold, {len(still_open)} open, {len(failures)} problem(s)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "template.yaml")))
