"""checks.templates catches what it claims: the launch-rule and role mistakes it was written for,
planted back into the shipped cluster template, and a Lambda answer over 6 MB in invoke.py.
Run by make test."""

import copy
import unittest

from cfnlint.decode import decode

from checks import templates as check_templates
from local import invoke

TEMPLATE = "../clusters/sliderule-cluster.yaml"


def problems(template):
    resolver = check_templates.Resolver(template, check_templates.SAMPLE)
    _, launch = check_templates.launch_problems("cluster", template, resolver)
    return launch + check_templates.role_problems("cluster", template)


class TheShippedTemplates(unittest.TestCase):
    def setUp(self):
        self.template, matches = decode(TEMPLATE)
        self.assertEqual(matches, [])

    def test_the_shipped_cluster_template_launches_and_grants_as_the_facts_say(self):
        self.assertEqual(problems(self.template), [])

    def test_a_network_interface_beside_the_launch_templates_groups_is_caught(self):
        broken = copy.deepcopy(self.template)
        ilb = broken["Resources"]["IlbInstance"]["Properties"]
        for key in ("SubnetId", "PrivateIpAddress", "SecurityGroupIds"):
            ilb.pop(key)
        ilb["NetworkInterfaces"] = [
            {
                "DeviceIndex": "0",
                "AssociatePublicIpAddress": True,
                "SubnetId": {"Ref": "PublicSubnet"},
                "GroupSet": [{"Ref": "IlbSecurityGroup"}],
            }
        ]
        found = problems(broken)
        self.assertTrue(any("IlbInstance would not launch: SecurityGroupIds" in p for p in found), found)

    def test_conflicting_volume_and_spot_settings_are_caught(self):
        broken = copy.deepcopy(self.template)
        data = broken["Resources"]["InstanceLaunchTemplate"]["Properties"]["LaunchTemplateData"]
        data["BlockDeviceMappings"][0]["Ebs"]["Iops"] = 3000
        data["BlockDeviceMappings"][0]["Ebs"]["VolumeType"] = "gp2"
        data["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {"InstanceInterruptionBehavior": "stop"}}
        found = problems(broken)
        self.assertTrue(any("NodeGroup would not launch: BlockDeviceMappings[0].Ebs.Iops" in p for p in found), found)
        self.assertTrue(any("NodeGroup would not launch: InstanceMarketOptions.SpotOptions" in p for p in found), found)

    def test_a_missing_grant_and_an_extra_one_are_caught(self):
        broken = copy.deepcopy(self.template)
        policies = broken["Resources"]["InstanceRole"]["Properties"]["Policies"]
        policies[:] = [p for p in policies if p["PolicyName"] != "find-nodes"]
        policies.append(
            {
                "PolicyName": "more",
                "PolicyDocument": {
                    "Statement": [{"Effect": "Allow", "Action": "ec2:TerminateInstances", "Resource": "*"}]
                },
            }
        )
        found = problems(broken)
        self.assertTrue(any("lacks ec2:DescribeInstances on *" in p for p in found), found)
        self.assertTrue(any("grants ec2:TerminateInstances on *" in p for p in found), found)


class LambdaResponses(unittest.TestCase):
    def test_an_answer_over_6_mb_fails_as_on_aws(self):
        self.assertEqual(
            invoke.within_response_limit(b"x" * invoke.LAMBDA_RESPONSE_BYTES, "status"),
            b"x" * invoke.LAMBDA_RESPONSE_BYTES,
        )
        with self.assertRaises(invoke.InvocationFailed):
            invoke.within_response_limit(b"x" * (invoke.LAMBDA_RESPONSE_BYTES + 1), "status")


if __name__ == "__main__":
    unittest.main()
