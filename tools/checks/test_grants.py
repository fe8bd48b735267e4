"""The grants check fails on a planted over-broad statement, and evaluates conditions and policy
variables as IAM does. Found by tools/run-tests (unittest discover)."""

import unittest

from checks import grants
from checks.grants import Request, decide


def plant(template: grants.Template, role: str, statement: dict) -> None:
    properties = template.resources[role]["Properties"]
    policy = {"PolicyName": "planted", "PolicyDocument": {"Version": "2012-10-17", "Statement": [statement]}}
    properties["Policies"] = [*properties.get("Policies", []), policy]


class PlantedStatements(unittest.TestCase):
    def test_the_shipped_template_holds_every_row_not_marked_open(self):
        failures, _ = grants.check(grants.Template(grants.ROOT / "template.yaml"))
        self.assertEqual(failures, [])

    def test_an_over_broad_statement_fails_the_check(self):
        planted = [
            (
                "ClusterFunctionRole",
                {"Effect": "Allow", "Action": "ssm:SendCommand", "Resource": "*"},
                "sends a command to a run's instance",
            ),
            (
                "RunnerImageFunctionRole",
                {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
                "images a cluster's instance",
            ),
            (
                "TestRunnerRole",
                {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"},
                "reads a secret not its own",
            ),
            (
                "SweepFunctionRole",
                {
                    "Effect": "Allow",
                    "Action": "ec2:TerminateInstances",
                    "Resource": {"Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/*"},
                },
                "ends a cluster's instance",
            ),
        ]
        for role, statement, why in planted:
            with self.subTest(role=role):
                template = grants.Template(grants.ROOT / "template.yaml")
                plant(template, role, statement)
                failures, _ = grants.check(template)
                self.assertTrue(any(why in failure for failure in failures), failures)


class Evaluation(unittest.TestCase):
    def test_policy_variables_bind_a_resource_to_the_caller(self):
        own = {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::logs/${aws:userid}/*"}
        caller = {"aws:userid": "AROAX:i-1"}
        self.assertEqual(decide([own], Request("s3:PutObject", "arn:aws:s3:::logs/AROAX:i-1/a.log", caller)), "allowed")
        self.assertEqual(decide([own], Request("s3:PutObject", "arn:aws:s3:::logs/AROAX:i-2/a.log", caller)), "refused")
        self.assertEqual(decide([own], Request("s3:PutObject", "arn:aws:s3:::logs//a.log", {})), "refused")

    def test_for_all_values_holds_without_the_key_and_an_explicit_deny_wins(self):
        keyed = {
            "Effect": "Allow",
            "Action": "dynamodb:UpdateItem",
            "Resource": "*",
            "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["run#*"]}},
        }
        self.assertEqual(decide([keyed], Request("dynamodb:UpdateItem", "t", {})), "allowed")
        leading = {"dynamodb:LeadingKeys": ["run#a", "lock#b"]}
        self.assertEqual(decide([keyed], Request("dynamodb:UpdateItem", "t", leading)), "refused")
        deny = {"Effect": "Deny", "Action": "dynamodb:*", "Resource": "*"}
        only_runs = {"dynamodb:LeadingKeys": ["run#a"]}
        self.assertEqual(decide([keyed, deny], Request("dynamodb:UpdateItem", "t", only_runs)), "refused")

    def test_tag_conditions_need_the_tag(self):
        kind = {
            "Effect": "Allow",
            "Action": "ec2:TerminateInstances",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:ResourceTag/sliderule:kind": ["test", "build"]}},
        }
        self.assertEqual(decide([kind], Request("ec2:TerminateInstances", "i", {})), "refused")
        tagged = {"aws:ResourceTag/sliderule:kind": "build"}
        self.assertEqual(decide([kind], Request("ec2:TerminateInstances", "i", tagged)), "allowed")
        self.assertEqual(
            decide([kind], Request("ec2:terminateinstances", "i", tagged)), "allowed", "actions ignore case"
        )


if __name__ == "__main__":
    unittest.main()
