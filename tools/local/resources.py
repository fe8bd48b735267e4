"""Creates the provisioner's own stack in the local AWS emulator from template.yaml, and writes
the environment the local Lambda emulator gives the functions.

template.yaml is translated offline with the SAM translator and created as the stack
`sliderule-provisioner`, so the table, queue, bucket, roles, instance profiles and functions carry
the names and configuration AWS would give them, and the functions' environment is what the
template resolves to: a wiring mistake in the template fails locally too. Added by hand is only
what the emulator's CloudFormation lacks: the schedule group, and an S3 object standing in for the
functions' code (the Lambda emulator serves the real binaries). Standing in for what the SlideRule
project's account holds: a project bucket with the data folders and the domain's TLS certificate
(a fake), the domain's hosted zone, the client tests' GitHub token secret (a fake), and in the
registry the build environment image and the images of each cluster profile's default version (as
after a release). Idempotent: an existing stack is kept.

Runs with the SAM venv's Python (samtranslator, cfn-lint's YAML loader, boto3)."""

import io
import json
import os
import sys
import zipfile
from pathlib import Path

import boto3
import yaml
from botocore.exceptions import ClientError
from cfnlint.decode import decode
from samtranslator.public.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform

ROOT = Path(__file__).resolve().parents[2]
STACK = "sliderule-provisioner"
CODE_BUCKET = f"{STACK}-local-code"
TEMPLATE_KEY = "template.json"
CODE_KEY = "bootstrap.zip"


class NoManagedPolicies:
    """The translator looks up managed policies named in SAM `Policies`; the template names none."""

    def load(self) -> dict:
        return {}


def translate(parameters: dict) -> dict:
    template, problems = decode(str(ROOT / "template.yaml"))
    if problems:
        raise SystemExit(f"local-resources: template.yaml does not parse: {problems}")
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://{CODE_BUCKET}/{CODE_KEY}"
    try:
        return transform(template, parameters, NoManagedPolicies())
    except InvalidDocumentException as error:
        raise SystemExit(
            f"local-resources: the SAM translator refused template.yaml: {[str(c) for c in error.causes]}"
        ) from None


def template_functions() -> list[str]:
    """The logical ids of the template's functions; each has a <LogicalId>Name output."""
    template, _ = decode(str(ROOT / "template.yaml"))
    return [key for key, resource in template["Resources"].items() if resource["Type"] == "AWS::Serverless::Function"]


def replace_references(node, logical_id: str, physical_name: str):
    """Replaces Ref and ${…} of a resource created by hand with its name."""
    if isinstance(node, dict):
        if node == {"Ref": logical_id}:
            return physical_name
        if isinstance(node.get("Fn::Sub"), str):
            return {"Fn::Sub": node["Fn::Sub"].replace("${" + logical_id + "}", physical_name)}
        return {key: replace_references(value, logical_id, physical_name) for key, value in node.items()}
    if isinstance(node, list):
        return [replace_references(value, logical_id, physical_name) for value in node]
    return node


def ignore(error_codes: tuple, call, **arguments):
    try:
        return call(**arguments)
    except ClientError as error:
        if error.response["Error"]["Code"] not in error_codes:
            raise
        return None


def schedule_groups_by_hand(template: dict, scheduler) -> dict:
    """The emulator's CloudFormation has no AWS::Scheduler::ScheduleGroup: create those directly."""
    for logical_id, resource in list(template["Resources"].items()):
        if resource["Type"] != "AWS::Scheduler::ScheduleGroup":
            continue
        name = resource.get("Properties", {}).get("Name")
        if name == {"Ref": "AWS::StackName"}:
            name = STACK
        if not isinstance(name, str):
            raise SystemExit(
                f"local-resources: schedule group {logical_id} needs a literal Name or !Ref AWS::StackName"
            )
        ignore(("ConflictException",), scheduler.create_schedule_group, Name=name)
        del template["Resources"][logical_id]
        template = replace_references(template, logical_id, name)
    return template


DOMAIN = "slideruleearth.io"
PROJECT_BUCKET = "sliderule-local-project"
PROJECT_FOLDER = "cf"
TOKEN_SECRET = "sliderule-provisioner-local/github-token"
# A minimal image manifest: the emulator's registry stores it as an image.
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 2,
            "digest": "sha256:" + "0" * 64,
        },
        "layers": [],
    }
)


def push_stand_in(ecr, repository: str, tag: str) -> None:
    ignore(("RepositoryAlreadyExistsException",), ecr.create_repository, repositoryName=repository)
    ignore(
        ("ImageAlreadyExistsException",), ecr.put_image, repositoryName=repository, imageTag=tag, imageManifest=MANIFEST
    )


def profile_default_images() -> set[tuple[str, str]]:
    """(repository, tag) of each catalog profile's default version. Defaults that are git refs
    would need the provisioner's tag mapping; the shipped ones are image tags."""
    catalog = yaml.safe_load((ROOT / "clusters" / "catalog.yaml").read_text())
    images = set()
    for profile in catalog["profiles"]:
        tag = {"main": "unstable"}.get(profile["version"], profile["version"])
        images.update((repository, tag) for repository in profile["images"])
    return images


def hosted_zone(client) -> str:
    """The domain's public hosted zone, created once; returns its id without the /hostedzone/ prefix."""
    route53 = client("route53")
    zones = route53.list_hosted_zones_by_name(DNSName=DOMAIN)["HostedZones"]
    zone = next((z for z in zones if z["Name"] == DOMAIN + "."), None)
    if zone is None:
        zone = route53.create_hosted_zone(Name=DOMAIN, CallerReference="sliderule-provisioner-local")["HostedZone"]
    return zone["Id"].split("/")[-1]


def project_stand_ins(client) -> str:
    """What the SlideRule project's account holds and runs read; returns the token secret's ARN."""
    s3 = client("s3")
    ignore(("BucketAlreadyOwnedByYou", "BucketAlreadyExists"), s3.create_bucket, Bucket=PROJECT_BUCKET)
    for folder in ("server", "ams"):
        s3.put_object(Bucket=PROJECT_BUCKET, Key=f"{PROJECT_FOLDER}/{folder}/README", Body=b"local stand-in data\n")
    s3.put_object(
        Bucket=PROJECT_BUCKET, Key=f"{PROJECT_FOLDER}/{DOMAIN}.pem", Body=b"local stand-in, not a certificate\n"
    )
    secrets = client("secretsmanager")
    ignore(
        ("ResourceExistsException",), secrets.create_secret, Name=TOKEN_SECRET, SecretString="local-not-a-real-token"
    )
    ecr = client("ecr")
    for repository, tag in {("sliderule-buildenv", "latest")} | profile_default_images():
        push_stand_in(ecr, repository, tag)
    return secrets.describe_secret(SecretId=TOKEN_SECRET)["ARN"]


def described_stack(cloudformation) -> dict | None:
    try:
        return cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]
    except ClientError:
        return None


def main(env_file: str) -> None:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    session = boto3.session.Session(region_name=region)

    def client(name):
        return session.client(name, endpoint_url=endpoint)

    account = client("sts").get_caller_identity()["Account"]
    parameters = {
        "BuildEnvironmentImage": f"{account}.dkr.ecr.{region}.amazonaws.com/sliderule-buildenv:latest",
        "ClusterDomain": DOMAIN,
        "HostedZoneId": hosted_zone(client),
        "ProjectBucket": PROJECT_BUCKET,
        "ProjectFolder": PROJECT_FOLDER,
        "GitHubTokenSecretArn": project_stand_ins(client),
    }

    cloudformation = client("cloudformation")
    stack = described_stack(cloudformation)
    if stack is None or stack["StackStatus"] not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        template = schedule_groups_by_hand(translate(parameters), client("scheduler"))
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("bootstrap", "#!/bin/sh\n# served by the local Lambda emulator\n")
        s3 = client("s3")
        s3.create_bucket(Bucket=CODE_BUCKET)
        s3.put_object(Bucket=CODE_BUCKET, Key=CODE_KEY, Body=code.getvalue())
        # From S3, as `sam deploy` sends it: the translated template is over the 51,200 bytes
        # CloudFormation takes as a TemplateBody (tools/aws_guard.py would refuse it).
        s3.put_object(Bucket=CODE_BUCKET, Key=TEMPLATE_KEY, Body=json.dumps(template).encode())
        cloudformation.create_stack(
            StackName=STACK,
            TemplateURL=f"https://{CODE_BUCKET}.s3.amazonaws.com/{TEMPLATE_KEY}",
            Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        )
        stack = described_stack(cloudformation) or {"StackStatus": "ABSENT"}
        if stack["StackStatus"] != "CREATE_COMPLETE":
            raise SystemExit(
                f"local-resources: stack {STACK} is {stack['StackStatus']}: {stack.get('StackStatusReason')}"
            )

    # Every function's environment, as the template resolved it; they share the Globals.
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    lambda_client = client("lambda")
    environment: dict[str, str] = {}
    for function in template_functions():
        configuration = lambda_client.get_function_configuration(FunctionName=outputs[f"{function}Name"])
        for key, value in configuration.get("Environment", {}).get("Variables", {}).items():
            if environment.setdefault(key, value) != value:
                raise SystemExit(
                    f"local-resources: functions disagree on {key}; the local Lambda emulator has one environment"
                )
    environment.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
            # The local stack's clock, which `make local-advance` moves (on AWS: the system clock).
            "PROVISIONER_LOCAL_CLOCK_FILE": os.path.join(os.path.dirname(os.path.abspath(env_file)), "clock-offset"),
        }
    )
    with open(env_file, "w", encoding="utf-8") as out:
        for key, value in sorted(environment.items()):
            out.write(f"{key}={value}\n")
    print(
        f"local resources ready: stack {STACK} from template.yaml ({len(outputs)} outputs), "
        f"table {environment['PROVISIONER_TABLE']}, schedule group {environment['PROVISIONER_SCHEDULE_GROUP']}"
    )


if __name__ == "__main__":
    main(sys.argv[1])
