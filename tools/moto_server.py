"""The local AWS emulator: moto's server, with the CloudFormation behaviour it lacks.

moto's CloudFormation cannot delete route tables, internet gateways, NAT gateways or Elastic IPs,
so deleting any stack with a routed VPC fails with DependencyViolation, where real CloudFormation
succeeds. The methods below delete them the way CloudFormation does, so the cluster template
deploys and destroys locally exactly as on AWS. It also leaves the default of a list parameter
(CommaDelimitedList) a string, so `!Join` over it joins characters: defaults are split as given
values are. Its EC2 ignores RunInstances' ClientToken, where EC2 answers a repeated token with the
instance it launched first: the provisioner relies on that to never launch twice, so it is added.
Nothing else is changed."""

import sys

from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import InstanceBackend
from moto.ec2.models.elastic_ip_addresses import ElasticAddress
from moto.ec2.models.internet_gateways import InternetGateway
from moto.ec2.models.nat_gateways import NatGateway
from moto.ec2.models.route_tables import RouteTable
from moto.cloudformation.parsing import ResourceMap
from moto.server import main


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


def _run_instances_once_per_token(self, image_id, count, user_data, security_group_names, **kwargs):
    token = kwargs.get("client_token")
    # moto's responses pass "ABCDE" when the request has no token.
    if token and token != "ABCDE":
        for reservation in self.reservations.values():
            if any(instance.client_token == token for instance in reservation.instances):
                return reservation
    return _run_instances(self, image_id, count, user_data, security_group_names, **kwargs)


ResourceMap.load_parameters = _load_parameters_with_list_defaults
InstanceBackend.run_instances = _run_instances_once_per_token
RouteTable.delete = _delete_route_table
InternetGateway.delete = _delete_internet_gateway
NatGateway.delete = _delete_nat_gateway
ElasticAddress.delete = _delete_address

if __name__ == "__main__":
    main(sys.argv[1:])
