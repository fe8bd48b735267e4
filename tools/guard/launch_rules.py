"""EC2's rules for launching an instance, which neither the API model nor the emulator applies.

One function over RunInstances' input (API member names), used twice: by the request guard
(tools/aws_guard.py) on every RunInstances the functions send, and by tools/check_templates.py
on each instance of our CloudFormation templates, resolved with its launch template as EC2
resolves it (the launch template's settings, then the instance's own over them).
"""

# EC2 API reference, RunInstances and InstanceNetworkInterfaceSpecification: "If you specify a
# network interface, you must specify any security groups and subnets as part of the network
# interface" and "PrivateIpAddress: you cannot specify this option and the network interfaces
# option in the same request"; EC2 answers InvalidParameterCombination ("Network interfaces and
# an instance-level security groups may not be specified on the same request").
INTERFACE_SOURCE = "EC2 API reference, RunInstances: network interfaces carry their own groups and subnet"
# InstanceNetworkInterfaceSpecification.AssociatePublicIpAddress: "You can only assign a public
# IP address to a network interface for eth0, and only for a new network interface."
PUBLIC_IP_SOURCE = "EC2 API reference, AssociatePublicIpAddress: device index 0, new interface only"
# SpotMarketOptions: a one-time request's interruption behavior must be terminate; persistent
# requests (stop or hibernate) need the persistent type.
SPOT_SOURCE = "EC2 API reference, SpotMarketOptions: one-time spot instances terminate on interruption"
# EBS user guide, "Amazon EBS volume types", and EbsBlockDevice: sizes per type; Iops only for
# io1, io2 and gp3 (required for io1 and io2); Throughput only for gp3; a KMS key only when encrypted.
VOLUME_SOURCE = "EBS user guide, volume types, and EC2 API reference, EbsBlockDevice"
VOLUME_SIZES = {
    "gp2": (1, 16384),
    "gp3": (1, 65536),
    "io1": (4, 16384),
    "io2": (4, 65536),
    "st1": (125, 16384),
    "sc1": (125, 16384),
    "standard": (1, 1024),
}
# An instance that runs with an instance profile reads its credentials from the metadata service.
IMDS_SOURCE = "EC2 user guide, instance metadata: credentials of the instance profile come from IMDS"


def _as_int(value, default=None):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def launch_findings(params):
    """(member, rule, value) for each of EC2's launch rules `params` breaks."""
    findings = []
    interfaces = params.get("NetworkInterfaces") or []
    if interfaces:
        for member in ("SecurityGroupIds", "SecurityGroups", "SubnetId", "PrivateIpAddress"):
            if params.get(member):
                findings.append((member, f"not beside NetworkInterfaces ({INTERFACE_SOURCE})", str(params[member])))
        for index, interface in enumerate(interfaces):
            public = str(interface.get("AssociatePublicIpAddress", "")).lower() == "true"
            if public and (_as_int(interface.get("DeviceIndex"), 0) != 0 or interface.get("NetworkInterfaceId")):
                findings.append((f"NetworkInterfaces[{index}].AssociatePublicIpAddress", PUBLIC_IP_SOURCE, "true"))
    market = params.get("InstanceMarketOptions") or {}
    if str(market.get("MarketType", "")).lower() == "spot":
        spot = market.get("SpotOptions") or {}
        spot_type = spot.get("SpotInstanceType", "one-time")
        behaviour = spot.get("InstanceInterruptionBehavior", "terminate")
        if (spot_type == "one-time") != (behaviour == "terminate"):
            findings.append(("InstanceMarketOptions.SpotOptions", SPOT_SOURCE, f"{spot_type} with {behaviour}"))
    findings += _volume_findings(params.get("BlockDeviceMappings") or [])
    metadata = params.get("MetadataOptions") or {}
    if params.get("IamInstanceProfile") and str(metadata.get("HttpEndpoint", "enabled")).lower() == "disabled":
        findings.append(("MetadataOptions.HttpEndpoint", IMDS_SOURCE, "disabled with an instance profile"))
    return findings


def _volume_findings(mappings):
    findings = []
    seen = set()
    for index, mapping in enumerate(mappings):
        name = mapping.get("DeviceName")
        if name in seen:
            findings.append((f"BlockDeviceMappings[{index}].DeviceName", f"unique ({VOLUME_SOURCE})", name))
        seen.add(name)
        ebs = mapping.get("Ebs")
        if not ebs:
            continue
        path = f"BlockDeviceMappings[{index}].Ebs"
        kind = ebs.get("VolumeType", "gp2")
        size = _as_int(ebs.get("VolumeSize"))
        low, high = VOLUME_SIZES.get(kind, (1, 16384))
        if size is not None and not low <= size <= high:
            findings.append((f"{path}.VolumeSize", f"{low} to {high} GiB for {kind} ({VOLUME_SOURCE})", str(size)))
        iops = _as_int(ebs.get("Iops"))
        if iops is not None and kind not in ("io1", "io2", "gp3"):
            findings.append((f"{path}.Iops", f"only for io1, io2 and gp3 ({VOLUME_SOURCE})", f"{iops} on {kind}"))
        if iops is None and kind in ("io1", "io2"):
            findings.append((f"{path}.Iops", f"required for {kind} ({VOLUME_SOURCE})", "missing"))
        if kind == "gp3" and iops is not None and iops < 3000:
            findings.append((f"{path}.Iops", f"at least 3000 for gp3 ({VOLUME_SOURCE})", str(iops)))
        throughput = _as_int(ebs.get("Throughput"))
        if throughput is not None and (kind != "gp3" or throughput < 125):
            findings.append(
                (f"{path}.Throughput", f"gp3 only, at least 125 MiB/s ({VOLUME_SOURCE})", f"{throughput} on {kind}")
            )
        encrypted = str(ebs.get("Encrypted", "false")).lower() == "true"
        if ebs.get("KmsKeyId") and not encrypted:
            findings.append((f"{path}.KmsKeyId", f"only with Encrypted ({VOLUME_SOURCE})", str(ebs["KmsKeyId"])))
    return findings
