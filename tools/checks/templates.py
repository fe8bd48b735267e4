"""Our CloudFormation templates checked as EC2 and IAM would take them, which neither cfn-lint nor
the emulator does.

- Every instance of template.yaml and clusters/sliderule-cluster.yaml is resolved as EC2 resolves
  it (its launch template's data, then its own properties over them) and given to EC2's launch
  rules (tools/launch_rules.py): a network interface beside instance- or template-level security
  groups or subnet, conflicting spot, volume and metadata settings. So are the launch templates
  that Auto Scaling groups launch as they are.
- The cluster instance role grants exactly what the SlideRule facts list (shared facts, section
  4): no grant missing, none more.

Intrinsic functions are evaluated with sample parameter values (SAMPLE), with every condition
true and then every optional setting empty, so both branches are checked. Run by make lint.
"""

import re
import sys

from cfnlint.decode import decode

from guard.launch_rules import launch_findings

REGION, ACCOUNT = "us-west-2", "123456789012"
SAMPLE = {
    "ClusterName": "ci-1",
    "Version": "v5.5.0",
    "Domain": "slideruleearth.io",
    "ContainerRegistry": "210987654321.dkr.ecr.us-east-1.amazonaws.com",
    "ProjectBucket": "project-bucket",
    "ProjectPublicBucket": "project-public-bucket",
    "LogBucket": "run-logs",
    "ProjectFolder": "cf",
    "PublicDataBuckets": ["data-a", "data-b"],
    "AlertStream": "alerts",
    "TelemetryStream": "telemetry",
}
# Optional settings that may be left empty, and so are checked both ways.
OPTIONAL = ("AlertStream", "TelemetryStream", "ProjectPublicBucket", "LogBucket")
NO_VALUE = object()


class Resolver:
    def __init__(self, template, values):
        self.template = template
        self.parameters = {}
        for name, slot in template.get("Parameters", {}).items():
            default = slot.get("Default", "")
            if slot.get("Type") == "CommaDelimitedList" and isinstance(default, str):
                default = default.split(",")
            self.parameters[name] = values.get(name, default)
        self.pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::StackName": "sliderule-cluster-ci-1",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
        }

    def condition(self, name):
        return bool(self.value(self.template.get("Conditions", {})[name]))

    def ref(self, name):
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return f"<{name}>"

    def sub(self, text, variables):
        def replace(match):
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and name not in self.parameters:
                return f"<{name}>"
            value = self.ref(name)
            return ",".join(value) if isinstance(value, list) else str(value)

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def value(self, node):
        if isinstance(node, list):
            items = [self.value(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, argument),) = node.items()
            if key == "Ref":
                return self.ref(argument)
            if key == "Condition":
                return self.condition(argument)
            if key == "Fn::Sub":
                if isinstance(argument, list):
                    return self.sub(argument[0], {k: self.value(v) for k, v in argument[1].items()})
                return self.sub(argument, {})
            if key == "Fn::GetAtt":
                parts = argument if isinstance(argument, list) else argument.split(".", 1)
                return f"<{parts[0]}.{parts[1]}>"
            if key == "Fn::Join":
                return self.value(argument[0]).join(str(v) for v in self.value(argument[1]))
            if key == "Fn::Split":
                return self.value(argument[1]).split(self.value(argument[0]))
            if key == "Fn::Select":
                return self.value(argument[1])[int(self.value(argument[0]))]
            if key == "Fn::FindInMap":
                top, second, third = (self.value(a) for a in argument)
                return self.template["Mappings"][top][second][third]
            if key == "Fn::If":
                name, yes, no = argument
                return self.value(yes if self.condition(name) else no)
            if key == "Fn::Equals":
                left, right = (self.value(a) for a in argument)
                return left == right
            if key == "Fn::Not":
                return not self.value(argument[0])
            if key == "Fn::Or":
                return any(self.value(a) for a in argument)
            if key == "Fn::And":
                return all(self.value(a) for a in argument)
            if key == "Fn::Base64":
                return self.value(argument)
            if key == "Fn::GetAZs":
                return [f"{REGION}a", f"{REGION}b"]
        resolved = {key: self.value(item) for key, item in node.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}


def _included(resolver, resource):
    return "Condition" not in resource or resolver.condition(resource["Condition"])


def _as_request(properties):
    """CloudFormation's instance and launch-template properties under RunInstances' member names."""
    request = dict(properties)
    interfaces = []
    for interface in request.get("NetworkInterfaces") or []:
        interface = dict(interface)
        if "GroupSet" in interface:
            interface["Groups"] = interface.pop("GroupSet")
        interfaces.append(interface)
    if interfaces:
        request["NetworkInterfaces"] = interfaces
    return request


def launch_problems(path, template, resolver):
    """EC2's launch rules on each instance (with its launch template) and each group's template."""
    resources = template.get("Resources", {})
    problems = []

    def template_data(specification):
        name = str(specification.get("LaunchTemplateId") or specification.get("LaunchTemplateName") or "").strip("<>")
        resource = resources.get(name)
        if resource is None or resource.get("Type") != "AWS::EC2::LaunchTemplate":
            return {}
        return resolver.value(resource["Properties"]["LaunchTemplateData"])

    launched = 0
    for name, resource in resources.items():
        if not _included(resolver, resource):
            continue
        kind = resource.get("Type")
        properties = resolver.value(resource.get("Properties", {}))
        if kind == "AWS::EC2::Instance":
            request = _as_request(template_data(properties.get("LaunchTemplate") or {}))
            request.update(_as_request({k: v for k, v in properties.items() if k != "LaunchTemplate"}))
        elif kind == "AWS::AutoScaling::AutoScalingGroup" and "LaunchTemplate" in properties:
            request = _as_request(template_data(properties["LaunchTemplate"]))
        else:
            continue
        launched += 1
        for member, rule, value in launch_findings(request):
            problems.append(f"{path}: {name} would not launch: {member}: {rule}: {value}")
    return launched, problems


# ---- The cluster role's grants --------------------------------------------------------------


def expected_grants(values):
    """What the facts list for the cluster's instance role, with the sample values."""
    registry_account, _, _, registry_region = values["ContainerRegistry"].split(".")[:4]
    read_buckets = [
        values["ProjectBucket"],
        *([values["ProjectPublicBucket"]] if values["ProjectPublicBucket"] else []),
        *values["PublicDataBuckets"],
    ]
    grants = {
        ("ecr:GetAuthorizationToken", "*"),
        ("ec2:DescribeInstances", "*"),
        ("secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{values['Domain']}/*"),
    }
    for action in ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"):
        # Any image of the registry: the server's execre endpoint runs images beyond the cluster's own.
        grants.add((action, f"arn:aws:ecr:{registry_region}:{registry_account}:repository/*"))
    for bucket in read_buckets:
        grants.add(("s3:ListBucket", f"arn:aws:s3:::{bucket}"))
        grants.add(("s3:GetObject", f"arn:aws:s3:::{bucket}/*"))
    if values["ProjectPublicBucket"]:
        grants.add(("s3:PutObject", f"arn:aws:s3:::{values['ProjectPublicBucket']}/*"))
    # The provisioner's one addition to the facts: a cluster's container logs, kept before a destroy.
    if values["LogBucket"]:
        grants.add(("s3:PutObject", f"arn:aws:s3:::{values['LogBucket']}/clusters/{values['ClusterName']}/*"))
    for stream in ("AlertStream", "TelemetryStream"):
        if values[stream]:
            for action in ("firehose:PutRecord", "firehose:PutRecordBatch"):
                grants.add((action, f"arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/{values[stream]}"))
    managed = {
        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
        "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy",
    }
    return grants, managed


def _statements(document):
    for statement in document.get("Statement", []):
        if statement.get("Effect") != "Allow":
            continue
        actions = statement.get("Action")
        resources = statement.get("Resource")
        for action in actions if isinstance(actions, list) else [actions]:
            for resource in resources if isinstance(resources, list) else [resources]:
                yield action, resource


def granted(template, resolver, role="InstanceRole"):
    resources = template["Resources"]
    properties = resolver.value(resources[role]["Properties"])
    grants = set()
    for policy in properties.get("Policies", []):
        grants |= set(_statements(policy["PolicyDocument"]))
    for _name, resource in resources.items():
        if resource.get("Type") == "AWS::IAM::Policy" and _included(resolver, resource):
            policy = resolver.value(resource["Properties"])
            if f"<{role}>" in policy.get("Roles", []):
                grants |= set(_statements(policy["PolicyDocument"]))
    return grants, set(properties.get("ManagedPolicyArns", []))


def role_problems(path, template):
    problems = []
    for values in (SAMPLE, {**SAMPLE, **{name: "" for name in OPTIONAL}}):
        resolver = Resolver(template, values)
        expected, expected_managed = expected_grants(values)
        grants, managed = granted(template, resolver)
        settings = "with every optional setting" if values is SAMPLE else "without the optional settings"
        for action, resource in sorted(expected - grants):
            problems.append(f"{path}: InstanceRole ({settings}) lacks {action} on {resource}, which the facts list")
        for action, resource in sorted(grants - expected):
            problems.append(
                f"{path}: InstanceRole ({settings}) grants {action} on {resource}, which the facts do not list"
            )
        for arn in sorted(expected_managed ^ managed):
            problems.append(f"{path}: InstanceRole ({settings}) managed policy {arn} differs from the facts")
    return problems


def main(paths):
    problems = []
    for path in paths:
        template, matches = decode(path)
        if template is None:
            problems += [f"{path}: {match}" for match in matches]
            continue
        counted = 0
        for values in (SAMPLE, {**SAMPLE, **{name: "" for name in OPTIONAL}}):
            launched, found = launch_problems(path, template, Resolver(template, values))
            counted = max(counted, launched)
            problems += [p for p in found if p not in problems]
        roles = "and the instance role's grants " if "InstanceRole" in template.get("Resources", {}) else ""
        if roles:
            problems += role_problems(path, template)
        print(f"check-templates: {path}: {counted} launches {roles}checked")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
