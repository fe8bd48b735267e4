"""Creates, in the local AWS emulator, every resource the functions need, and writes the
environment the local Lambda emulator gives them. Idempotent: existing resources are kept."""

import json
import os
import sys

import boto3
from botocore.exceptions import ClientError

# The same names template.yaml gives these resources for a stack named sliderule-provisioner.
TABLE = "sliderule-provisioner"
SCHEDULE_GROUP = "sliderule-provisioner"
DEAD_LETTER_QUEUE = "sliderule-provisioner-dlq"
SCHEDULER_ROLE = "sliderule-provisioner-scheduler"
TEST_RUNNER_PROFILE = "sliderule-provisioner-runner"
BUILD_RUNNER_PROFILE = "sliderule-provisioner-build-runner"


def exists_already(error: ClientError) -> bool:
    return error.response["Error"]["Code"] in {
        "ResourceInUseException",
        "ConflictException",
        "BucketAlreadyOwnedByYou",
        "EntityAlreadyExists",
        "QueueAlreadyExists",
    }


def ensure(create):
    try:
        return create()
    except ClientError as error:
        if not exists_already(error):
            raise
        return None


def main(env_file: str) -> None:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    session = boto3.session.Session(region_name=region)
    client = lambda name: session.client(name, endpoint_url=endpoint)

    dynamodb = client("dynamodb")
    ensure(lambda: dynamodb.create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    ))
    ensure(lambda: dynamodb.update_time_to_live(
        TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_ttl"}
    ))

    ensure(lambda: client("scheduler").create_schedule_group(Name=SCHEDULE_GROUP))

    sqs = client("sqs")
    queue_url = sqs.create_queue(QueueName=DEAD_LETTER_QUEUE)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    iam = client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "scheduler.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    ensure(lambda: iam.create_role(RoleName=SCHEDULER_ROLE, AssumeRolePolicyDocument=json.dumps(trust)))
    role_arn = iam.get_role(RoleName=SCHEDULER_ROLE)["Role"]["Arn"]
    ec2_trust = dict(trust, Statement=[dict(trust["Statement"][0], Principal={"Service": "ec2.amazonaws.com"})])
    for profile in (TEST_RUNNER_PROFILE, BUILD_RUNNER_PROFILE):
        ensure(lambda: iam.create_role(RoleName=profile, AssumeRolePolicyDocument=json.dumps(ec2_trust)))
        if ensure(lambda: iam.create_instance_profile(InstanceProfileName=profile)) is not None:
            iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=profile)
    account = role_arn.split(":")[4]
    run_log_bucket = f"{TABLE}-runs-{account}-{region}"
    ensure(lambda: client("s3").create_bucket(Bucket=run_log_bucket))

    environment = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "PROVISIONER_TABLE": TABLE,
        "PROVISIONER_SCHEDULE_GROUP": SCHEDULE_GROUP,
        "PROVISIONER_DESTROY_FUNCTION_ARN": f"arn:aws:lambda:{region}:{account}:function:provisioner-destroy",
        "PROVISIONER_SCHEDULER_ROLE_ARN": role_arn,
        "PROVISIONER_DEAD_LETTER_ARN": queue_arn,
        "PROVISIONER_RUN_LOG_BUCKET": run_log_bucket,
        "PROVISIONER_BUILD_IMAGE": f"{account}.dkr.ecr.{region}.amazonaws.com/sliderule-buildenv:latest",
        "PROVISIONER_CONTAINER_REGISTRY": f"{account}.dkr.ecr.{region}.amazonaws.com",
        "PROVISIONER_TEST_RUNNER_INSTANCE_PROFILE": TEST_RUNNER_PROFILE,
        "PROVISIONER_BUILD_RUNNER_INSTANCE_PROFILE": BUILD_RUNNER_PROFILE,
        "RUST_LOG": os.environ.get("RUST_LOG", "info"),
    }
    with open(env_file, "w", encoding="utf-8") as out:
        for key, value in environment.items():
            out.write(f"{key}={value}\n")
    print(f"local resources ready: table {TABLE}, schedule group {SCHEDULE_GROUP}, queue {DEAD_LETTER_QUEUE}, "
          f"role {SCHEDULER_ROLE}, bucket {run_log_bucket}, instance profiles {TEST_RUNNER_PROFILE} {BUILD_RUNNER_PROFILE}")


if __name__ == "__main__":
    main(sys.argv[1])
