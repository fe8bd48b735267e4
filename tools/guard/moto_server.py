"""The local AWS emulator: moto's server, with the CloudFormation behaviour it lacks.

moto's CloudFormation cannot delete route tables, internet gateways, NAT gateways or Elastic IPs,
so deleting any stack with a routed VPC fails with DependencyViolation, where real CloudFormation
succeeds. The methods below delete them the way CloudFormation does, so the cluster template
deploys and destroys locally exactly as on AWS. It also leaves the default of a list parameter
(CommaDelimitedList) a string, so `!Join` over it joins characters: defaults are split as given
values are. Its EC2 ignores RunInstances' ClientToken, where EC2 answers a repeated token with the
instance it launched first: the provisioner relies on that to never launch twice, so it is added.
It never runs short of capacity: a spot launch of a cluster's run is refused with EC2's
InsufficientInstanceCapacity when PROVISIONER_NO_SPOT_CAPACITY names a file with a line
`INSTANCE_TYPE CLUSTER` for it (the local stack's no-spot-capacity file), so the tests can see
what a launch does then.
Its CreateImage refuses snapshot tags (NotImplementedError), which EC2 puts on the image's
snapshots: they are applied. Nothing else is changed in what it does.

It is also stricter than moto: every request passes tools/aws_guard.py first, which records what
AWS would refuse (its models and documented limits) to PROVISIONER_AWS_GUARD_LOG, and make test
fails on any such request."""

import io
import os
import sys
import threading

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import AmiBackend
from moto.ec2.models.instances import InstanceBackend
from moto.ec2.models.elastic_ip_addresses import ElasticAddress
from moto.ec2.models.internet_gateways import InternetGateway
from moto.ec2.models.nat_gateways import NatGateway
from moto.ec2.models.route_tables import RouteTable
from moto.cloudformation.parsing import ResourceMap
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import main

from guard import aws_guard


def _delete_route_table(self, account_id, region_name):
    backend = ec2_backends[account_id][region_name]
    for association_id in list(self._associations):
        backend.disassociate_route_table(association_id)
    backend.delete_route_table(self.id)


def _delete_internet_gateway(self, account_id, region_name):
    backend = ec2_backends[account_id][region_name]
    if self.vpc is not None:
        backend.detach_internet_gateway(self.id, self.vpc.id)
    backend.delete_internet_gateway(self.id)


def _delete_nat_gateway(self, account_id, region_name):
    ec2_backends[account_id][region_name].delete_nat_gateway(self.id)


def _delete_address(self, account_id, region_name):
    ec2_backends[account_id][region_name].release_address(allocation_id=self.allocation_id)


_load_parameters = ResourceMap.load_parameters


def _load_parameters_with_list_defaults(self):
    _load_parameters(self)
    for name, slot in self._template.get("Parameters", {}).items():
        value = self.resolved_parameters.get(name)
        listed = slot.get("Type") == "CommaDelimitedList" or slot.get("Type", "").startswith("List<")
        if listed and isinstance(value, str) and name not in self.input_parameters:
            self.resolved_parameters[name] = self._parsed_resources[name] = value.split(",")


_run_instances = InstanceBackend.run_instances


def _short_of_spot_capacity(kwargs) -> bool:
    """Whether the file PROVISIONER_NO_SPOT_CAPACITY names says this spot launch finds no capacity."""
    path = os.environ.get("PROVISIONER_NO_SPOT_CAPACITY")
    if not path or kwargs.get("instance_market_options") != "spot":
        return False
    try:
        with open(path, encoding="utf-8") as rules:
            short = {tuple(line.split()[:2]) for line in rules if len(line.split()) >= 2}
    except OSError:
        return False
    cluster = kwargs.get("tags", {}).get("instance", {}).get("sliderule:cluster")
    return (kwargs.get("instance_type"), cluster) in short


def _run_instances_once_per_token(self, image_id, count, user_data, security_group_names, **kwargs):
    if _short_of_spot_capacity(kwargs):
        raise EC2ClientError(
            "InsufficientInstanceCapacity",
            f"We currently do not have sufficient {kwargs.get('instance_type')} capacity in the Availability Zone"
            " you requested.",
        )
    token = kwargs.get("client_token")
    # moto's responses pass "ABCDE" when the request has no token.
    if token and token != "ABCDE":
        for reservation in self.reservations.values():
            if any(instance.client_token == token for instance in reservation.instances):
                return reservation
    return _run_instances(self, image_id, count, user_data, security_group_names, **kwargs)


_create_image = AmiBackend.create_image


def _create_image_with_snapshot_tags(self, instance_id, name, description, tag_specifications=None):
    specifications = tag_specifications or []
    snapshot_tags = [tag for spec in specifications if spec["ResourceType"] == "snapshot" for tag in spec["Tags"]]
    others = [spec for spec in specifications if spec["ResourceType"] != "snapshot"]
    ami = _create_image(self, instance_id, name, description, tag_specifications=others)
    snapshot = getattr(ami, "ebs_snapshot", None)
    for tag in snapshot_tags if snapshot is not None else []:
        snapshot.add_tag(tag["Key"], tag["Value"])
    return ami


_dispatch = DomainDispatcherApplication.__call__
# moto's backends are not thread-safe (two stacks created at once can take one subnet address and
# fail with "IP already in use", which the caller's retry turns into AlreadyExists): the emulator
# serves one request at a time. No request of ours waits inside moto for another.
_serving = threading.Lock()


def _updated_item_size(params, region):
    """The size of the item an UpdateItem left, read from moto once it applied the update."""
    try:
        item = dynamodb_backends[DEFAULT_ACCOUNT_ID][region].get_item(params["TableName"], params["Key"])
        return aws_guard.dynamodb_item_size(item.to_json()["Attributes"]) if item else 0
    except Exception:  # the update failed, or the table is gone: nothing was stored
        return 0


def _dispatch_checked(self, environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")}
    if "CONTENT_TYPE" in environ:
        headers["content-type"] = environ["CONTENT_TYPE"]
    request = aws_guard.Request(
        environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""), headers, body
    )
    checked = aws_guard.check(request)
    with _serving:
        response = _dispatch(self, environ, start_response)
        if checked is not None and (checked.service, checked.operation) == ("dynamodb", "UpdateItem"):
            size = _updated_item_size(checked.params, aws_guard.region_of(headers))
            checked.findings += aws_guard.check_updated_item(checked.params.get("TableName"), size)
        if checked is not None and checked.service == "dynamodb":
            answer = b"".join(response)
            response = [answer]
            checked.items_read = aws_guard.dynamodb_items_read(checked.operation, answer)
    aws_guard.record(checked)
    return response


ResourceMap.load_parameters = _load_parameters_with_list_defaults
DomainDispatcherApplication.__call__ = _dispatch_checked
InstanceBackend.run_instances = _run_instances_once_per_token
AmiBackend.create_image = _create_image_with_snapshot_tags
RouteTable.delete = _delete_route_table
InternetGateway.delete = _delete_internet_gateway
NatGateway.delete = _delete_nat_gateway
ElasticAddress.delete = _delete_address

if __name__ == "__main__":
    main(sys.argv[1:])
