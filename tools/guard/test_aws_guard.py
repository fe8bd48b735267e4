"""The request guard catches each rule it claims: violations planted in requests serialized by
botocore itself (with its own client-side validation off), exactly as they would reach the
emulator, and valid requests of every protocol pass. Run by make test."""

import json
import unittest

import botocore.session
from botocore.config import Config

from guard import aws_guard
from guard.launch_rules import launch_findings


class _Sent(Exception):
    pass


def _request(service, operation, **params):
    """The aws_guard.Request botocore would send for `operation`."""
    session = botocore.session.get_session()
    client = session.create_client(
        service,
        region_name="us-west-2",
        endpoint_url="http://127.0.0.1:1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(parameter_validation=False, retries={"max_attempts": 0}),
    )
    captured = {}

    def capture(request, **_):
        captured["request"] = request
        raise _Sent()

    client.meta.events.register("before-send", capture)
    try:
        getattr(client, operation)(**params)
    except _Sent:
        pass
    sent = captured["request"]
    path, _, query = sent.url.split("127.0.0.1:1", 1)[1].partition("?")
    body = sent.body or b""
    if isinstance(body, str):
        body = body.encode()
    elif hasattr(body, "read"):
        body = body.read()
    headers = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in sent.headers.items()}
    return aws_guard.Request(sent.method, path, query, headers, body)


def _findings(service, operation, **params):
    checked = aws_guard.check(_request(service, operation, **params))
    return checked.findings


def _launch(**extra):
    params = dict(
        ImageId="ami-12345678",
        InstanceType="c7g.2xlarge",
        MinCount=1,
        MaxCount=1,
        UserData="#!/bin/bash\necho hi\n",  # botocore base64-encodes it
        ClientToken="0123456789abcdef0123456789abcdef-0",
        InstanceMarketOptions={
            "MarketType": "spot",
            "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
        },
        InstanceInitiatedShutdownBehavior="terminate",
        MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
        BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 100, "VolumeType": "gp3", "Encrypted": True}}
        ],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "sliderule:run-id", "Value": "test-ci-1"}]}],
        SubnetId="subnet-1234",
        SecurityGroupIds=["sg-1234"],
    )
    params.update(extra)
    return params


class ValidRequestsPass(unittest.TestCase):
    def test_each_protocol_reads_back_and_passes(self):
        cases = [
            ("ec2", "run_instances", _launch()),
            ("ec2", "describe_instances", {"Filters": [{"Name": "tag:sliderule:run-id", "Values": ["x"]}]}),
            (
                "cloudformation",
                "create_stack",
                {
                    "StackName": "sliderule-cluster-ci-1",
                    "TemplateBody": "{}",
                    "Parameters": [{"ParameterKey": "A", "ParameterValue": "b"}],
                },
            ),
            (
                "scheduler",
                "create_schedule",
                {
                    "Name": "destroy.ci-1.1",
                    "GroupName": "g",
                    "ScheduleExpression": "at(2026-12-02T10:00:00)",
                    "FlexibleTimeWindow": {"Mode": "OFF"},
                    "Target": {
                        "Arn": "arn:aws:lambda:us-west-2:123456789012:function:d",
                        "RoleArn": "arn:aws:iam::123456789012:role/r",
                        "Input": "{}",
                    },
                },
            ),
            ("scheduler", "get_schedule", {"Name": "destroy.ci-1.1", "GroupName": "g"}),
            ("scheduler", "list_schedules", {"GroupName": "g", "NamePrefix": "destroy."}),
            (
                "sns",
                "publish",
                {
                    "TopicArn": "arn:aws:sns:us-west-2:123456789012:t",
                    "Subject": "SlideRule: run failed",
                    "Message": "m",
                },
            ),
            (
                "dynamodb",
                "put_item",
                {
                    "TableName": "t",
                    "Item": {"pk": {"S": "run#1"}, "n": {"N": "12"}, "m": {"M": {"a": {"L": [{"S": "x"}]}}}},
                },
            ),
            (
                "dynamodb",
                "update_item",
                {
                    "TableName": "t",
                    "Key": {"pk": {"S": "run#1"}},
                    "UpdateExpression": "SET #a = :a",
                    "ExpressionAttributeNames": {"#a": "a"},
                    "ExpressionAttributeValues": {":a": {"S": "b"}},
                },
            ),
            ("s3", "put_object", {"Bucket": "runs", "Key": "runs/test-ci-1/checkout.log", "Body": b"log"}),
            ("ecr", "describe_images", {"repositoryName": "sliderule", "imageIds": [{"imageTag": "v5.5.0"}]}),
            ("ssm", "get_parameter", {"Name": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"}),
        ]
        for service, operation, params in cases:
            with self.subTest(operation=operation):
                checked = aws_guard.check(_request(service, operation, **params))
                self.assertEqual([str(f) for f in checked.findings], [])
                self.assertNotEqual(checked.operation, "?")

    def test_run_instances_is_read_back_member_by_member(self):
        checked = aws_guard.check(_request("ec2", "run_instances", **_launch()))
        self.assertEqual(checked.params["ClientToken"], "0123456789abcdef0123456789abcdef-0")
        self.assertEqual(checked.params["TagSpecifications"][0]["Tags"][0]["Key"], "sliderule:run-id")
        self.assertEqual(checked.params["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"], 100)
        self.assertEqual(checked.params["InstanceMarketOptions"]["SpotOptions"]["SpotInstanceType"], "one-time")

    def test_the_emulators_own_interface_and_presigned_urls_are_recorded_and_pass(self):
        emulator = aws_guard.check(aws_guard.Request("GET", "/moto-api/", "", {}, b""))
        self.assertEqual((emulator.service, emulator.findings), ("emulator", []))
        presigned = aws_guard.check(
            aws_guard.Request("GET", "/bucket/key", "X-Amz-Signature=abc&X-Amz-Credential=x", {}, b"")
        )
        self.assertEqual((presigned.service, presigned.findings), ("presigned", []))


class PlantedViolationsAreCaught(unittest.TestCase):
    def assertCaught(self, findings, member, rule):
        matching = [f for f in findings if member in f.member and rule in f.rule]
        self.assertTrue(matching, f"no finding on {member} for '{rule}' in {[str(f) for f in findings]}")

    def test_user_data_over_16_kb_raw(self):
        self.assertCaught(
            _findings("ec2", "run_instances", **_launch(UserData="#" * (16 * 1024 + 1))), "UserData", "16384 bytes raw"
        )
        self.assertEqual(_findings("ec2", "run_instances", **_launch(UserData="#" * (16 * 1024))), [])

    def test_client_token_over_64_characters(self):
        self.assertCaught(_findings("ec2", "run_instances", **_launch(ClientToken="t" * 65)), "ClientToken", "64 ASCII")

    def test_tags(self):
        def tagged(tags):
            return _launch(TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])

        self.assertCaught(_findings("ec2", "run_instances", **tagged([{"Key": "k" * 129, "Value": "v"}])), "Key", "128")
        self.assertCaught(
            _findings("ec2", "run_instances", **tagged([{"Key": "k", "Value": "v" * 257}])), "Value", "256"
        )
        self.assertCaught(_findings("ec2", "run_instances", **tagged([{"Key": "aws:x", "Value": "v"}])), "Key", "aws:")
        many = [{"Key": f"k{i}", "Value": "v"} for i in range(51)]
        self.assertCaught(_findings("ec2", "run_instances", **tagged(many)), "Tags", "50 tags")
        self.assertCaught(
            _findings("cloudformation", "create_stack", StackName="s", TemplateBody="{}", Tags=many), "Tags", "50"
        )

    def test_image_name_and_description(self):
        def image(**extra):
            return dict(
                dict(InstanceId="i-1234567890abcdef0", Name="sliderule-runner-arm64-image-ci-1", NoReboot=True), **extra
            )

        self.assertEqual(_findings("ec2", "create_image", **image()), [])
        self.assertCaught(_findings("ec2", "create_image", **image(Name="ab")), "Name", "3 to 128")
        self.assertCaught(_findings("ec2", "create_image", **image(Name="a" * 129)), "Name", "3 to 128")
        self.assertCaught(_findings("ec2", "create_image", **image(Name="a:b:c")), "Name", "3 to 128")
        self.assertCaught(_findings("ec2", "create_image", **image(Description="d" * 256)), "Description", "255")

    def test_launch_rules(self):
        interfaces = [{"DeviceIndex": 0, "SubnetId": "subnet-1", "Groups": ["sg-1"], "PrivateIpAddress": "10.0.1.4"}]
        self.assertCaught(
            _findings("ec2", "run_instances", **_launch(NetworkInterfaces=interfaces)),
            "SecurityGroupIds",
            "NetworkInterfaces",
        )
        stop = {
            "MarketType": "spot",
            "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "stop"},
        }
        self.assertCaught(
            _findings("ec2", "run_instances", **_launch(InstanceMarketOptions=stop)), "SpotOptions", "one-time"
        )
        gp2 = [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 20, "VolumeType": "gp2", "Iops": 3000}}]
        self.assertCaught(_findings("ec2", "run_instances", **_launch(BlockDeviceMappings=gp2)), "Iops", "only for io1")
        off = {"HttpEndpoint": "disabled"}
        findings = launch_findings({"IamInstanceProfile": {"Name": "p"}, "MetadataOptions": off})
        self.assertEqual([f[0] for f in findings], ["MetadataOptions.HttpEndpoint"])

    def test_the_models_required_members_enums_lengths_ranges_and_patterns(self):
        launch = _launch()
        del launch["MinCount"]
        self.assertCaught(_findings("ec2", "run_instances", **launch), "MinCount", "required")
        self.assertCaught(
            _findings("ec2", "run_instances", **_launch(InstanceType="x9.huge")), "InstanceType", "one of the model's"
        )
        self.assertCaught(
            _findings("cloudformation", "create_stack", StackName="s", TemplateBody="{}", TimeoutInMinutes=0),
            "TimeoutInMinutes",
            "at least 1",
        )
        schedule = {
            "GroupName": "g",
            "ScheduleExpression": "at(2026-12-02T10:00:00)",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": {"Arn": "a", "RoleArn": "arn:aws:iam::123456789012:role/r"},
        }
        self.assertCaught(
            _findings("scheduler", "create_schedule", Name="n" * 65, **schedule), "Name", "at most 64 characters"
        )
        self.assertCaught(_findings("scheduler", "create_schedule", Name="a b", **schedule), "Name", "pattern")
        self.assertCaught(
            _findings(
                "scheduler", "create_schedule", Name="ok", **{**schedule, "FlexibleTimeWindow": {"Mode": "SOMETIMES"}}
            ),
            "FlexibleTimeWindow.Mode",
            "one of",
        )

    def test_cloudformation_quotas(self):
        self.assertCaught(
            _findings("cloudformation", "create_stack", StackName="s", TemplateBody=" " * 51_201),
            "TemplateBody",
            "51200 bytes",
        )
        big = [{"ParameterKey": "P", "ParameterValue": "v" * 4_097}]
        self.assertCaught(
            _findings("cloudformation", "create_stack", StackName="s", TemplateBody="{}", Parameters=big),
            "ParameterValue",
            "4096 bytes",
        )

    def test_scheduler_at_expression(self):
        schedule = {
            "GroupName": "g",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": {"Arn": "a", "RoleArn": "arn:aws:iam::123456789012:role/r"},
        }
        for expression in ["at(2026-12-02T10:00:00Z)", "at(2026-12-02 10:00:00)", "at(2026-12-02T10:00:00.000)"]:
            with self.subTest(expression=expression):
                self.assertCaught(
                    _findings("scheduler", "create_schedule", Name="n", ScheduleExpression=expression, **schedule),
                    "ScheduleExpression",
                    "at(yyyy",
                )

    def test_sns_subject_and_message(self):
        topic = "arn:aws:sns:us-west-2:123456789012:t"
        self.assertCaught(
            _findings("sns", "publish", TopicArn=topic, Message="m", Subject="s" * 100), "Subject", "less than 100"
        )
        self.assertCaught(
            _findings("sns", "publish", TopicArn=topic, Message="m", Subject="two\nlines"), "Subject", "line breaks"
        )
        self.assertCaught(_findings("sns", "publish", TopicArn=topic, Message="m" * 262_145), "Message", "262144 bytes")

    def test_dynamodb_item_key_and_expression_sizes(self):
        item = {"pk": {"S": "run#1"}, "log": {"S": "x" * (400 * 1024)}}
        self.assertCaught(_findings("dynamodb", "put_item", TableName="t", Item=item), "Item", "409600 bytes")
        self.assertCaught(
            _findings("dynamodb", "get_item", TableName="t", Key={"pk": {"S": "k" * 2049}}), "Key.pk", "2048 bytes"
        )
        long_expression = "SET " + ", ".join(f"#a{i} = :a" for i in range(700))
        found = _findings(
            "dynamodb", "update_item", TableName="t", Key={"pk": {"S": "k"}}, UpdateExpression=long_expression
        )
        self.assertCaught(found, "UpdateExpression", "4096 bytes")
        self.assertTrue(aws_guard.check_updated_item("t", 400 * 1024 + 1))
        self.assertFalse(aws_guard.check_updated_item("t", 400 * 1024))
        self.assertEqual(aws_guard.dynamodb_item_size({"ab": {"S": "xyz"}, "n": {"N": "123"}}), 2 + 3 + 1 + 3)

    def test_an_unsigned_request_is_a_finding(self):
        checked = aws_guard.check(aws_guard.Request("GET", "/bucket/key", "", {}, b""))
        self.assertCaught(checked.findings, "(request)", "signed")

    def test_a_request_it_cannot_identify_is_a_finding(self):
        request = _request("ec2", "describe_instances")
        request.body = b"Action=NoSuchAction&Version=2016-11-15"
        checked = aws_guard.check(request)
        self.assertCaught(checked.findings, "(request)", "identified")

    def test_the_report_fails_on_any_finding_and_passes_on_none(self):
        import os
        import tempfile

        with tempfile.TemporaryDirectory() as directory:
            log = os.path.join(directory, "guard.jsonl")
            aws_guard.record(aws_guard.check(_request("ec2", "run_instances", **_launch())), log)
            self.assertEqual(aws_guard.report(log), 0)
            aws_guard.record(aws_guard.check(_request("ec2", "run_instances", **_launch(ClientToken="t" * 65))), log)
            self.assertEqual(aws_guard.report(log), 1)
            with open(log, encoding="utf-8") as lines:
                self.assertEqual(len([json.loads(line) for line in lines]), 2)

    def test_the_report_fails_when_it_saw_too_few_requests_or_a_planted_violation_passed(self):
        import os
        import tempfile

        with tempfile.TemporaryDirectory() as directory:
            log = os.path.join(directory, "guard.jsonl")
            aws_guard.record(aws_guard.check(_request("ec2", "run_instances", **_launch())), log)
            self.assertEqual(aws_guard.report(log, at_least=1), 0)
            self.assertEqual(aws_guard.report(log, at_least=2), 1, "fewer requests than the suite sends")
            self.assertEqual(aws_guard.report(log, planted=1), 1, "no planted violation was seen")
            planted = _request("ec2", "run_instances", **_launch(ClientToken="t" * 65))
            planted.headers["user-agent"] = f"aws-sdk-rust/1.0 app/{aws_guard.PLANTED_APP}"
            aws_guard.record(aws_guard.check(planted), log)
            self.assertEqual(aws_guard.report(log, planted=1), 0, "a planted violation refused is no finding")
            passed = _request("ec2", "run_instances", **_launch())
            passed.headers["user-agent"] = f"aws-sdk-rust/1.0 app/{aws_guard.PLANTED_APP}"
            aws_guard.record(aws_guard.check(passed), log)
            self.assertEqual(aws_guard.report(log, planted=1), 1, "a planted request the guard passed")


if __name__ == "__main__":
    unittest.main()


class ItemsReadAreCounted(unittest.TestCase):
    """What the growth bench sums: the items each DynamoDB read read."""

    def test_each_read_counts_its_items(self):
        count = aws_guard.dynamodb_items_read
        self.assertEqual(count("GetItem", json.dumps({"Item": {"pk": {"S": "a"}}}).encode()), 1)
        self.assertEqual(count("GetItem", b"{}"), 0)
        self.assertEqual(count("Scan", json.dumps({"Count": 2, "ScannedCount": 7}).encode()), 7)
        self.assertEqual(count("Query", json.dumps({"Count": 3}).encode()), 3)
        batch = {"Responses": {"t": [{"pk": {"S": "a"}}, {"pk": {"S": "b"}}]}}
        self.assertEqual(count("BatchGetItem", json.dumps(batch).encode()), 2)
        self.assertIsNone(count("PutItem", b"{}"))
