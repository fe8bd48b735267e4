"""What AWS would refuse, checked on every request that reaches the local AWS emulator.

The emulator accepts requests AWS refuses (oversized user-data, over-long tokens, ...), and the
Rust SDK checks no constraint of its models. So tools/moto_server.py hands every request to
`check` before moto sees it: the request is identified (service and operation) and parsed back
into the operation's input with botocore's own models, then checked against

- the model: required members, enums, lengths, ranges and patterns (AWS's published models, as
  botocore ships them; patterns must match the whole value, as the services apply them);
- the documented limits the models do not carry (LIMITS below, each with its source).

A request that cannot be identified is a finding too, so nothing passes unchecked. Findings are
appended as JSON lines to the file named by PROVISIONER_AWS_GUARD_LOG; `python tools/aws_guard.py
report LOG` prints the tally and fails on any finding (make test runs it after the end-to-end
tests). tools/test_aws_guard.py plants a violation of every rule and shows each is caught.
"""

import base64
import binascii
import json
import os
import re
import sys
import threading
import urllib.parse
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import asdict, dataclass, field

import botocore.session

from launch_rules import launch_findings

_session = botocore.session.get_session()
_models = {}
_models_lock = threading.Lock()


@dataclass
class Finding:
    operation: str  # "EC2 RunInstances"
    member: str  # "TagSpecifications[0].Tags[3].Key"
    rule: str  # "max length 128 (EC2 tag restrictions)"
    value: str  # what was sent, shortened

    def __str__(self):
        return f"{self.operation}: {self.member}: {self.rule}: {self.value}"


@dataclass
class Request:
    method: str
    path: str  # undecoded, without the query
    query: str
    headers: dict  # lower-case names
    body: bytes


@dataclass
class Checked:
    service: str = ""
    operation: str = ""
    agent: str = ""
    findings: list = field(default_factory=list)
    params: dict = field(default_factory=dict)


def shown(value, limit=80):
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# ---- Identifying the operation -------------------------------------------------------------


def _model(service):
    with _models_lock:
        if service not in _models:
            try:
                _models[service] = _session.get_service_model(service)
            except Exception:  # an unknown service name
                _models[service] = None
        return _models[service]


def _signing_name(headers):
    match = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request", headers.get("authorization", ""))
    return match.group(1) if match else None


def region_of(headers):
    match = re.search(r"Credential=[^/]+/[^/]+/([^/]+)/", headers.get("authorization", ""))
    return match.group(1) if match else "us-east-1"


def _agent(headers):
    agent = headers.get("user-agent", "")
    if "app/sliderule-provisioner" in agent:
        return "functions"
    if "aws-sdk-rust" in agent:
        return "rust-sdk"
    if agent.startswith("aws-cli") or " aws-cli/" in agent:
        return "aws-cli"
    if "Boto3" in agent or "Botocore" in agent:
        return "boto3"
    return "other"


def _form(request):
    text = request.body.decode("utf-8", "replace") if request.method != "GET" else request.query
    return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))


def identify(request):
    """(model, operation model, protocol) of a signed request, or None when it is not an AWS call."""
    signing = _signing_name(request.headers)
    if signing is None:
        return None
    model = _model(signing) or _model({"email": "ses", "monitoring": "cloudwatch", "events": "events"}.get(signing, ""))
    if model is None:
        raise LookupError(f"no AWS service model signs as '{signing}'")
    target = request.headers.get("x-amz-target")
    content_type = request.headers.get("content-type", "")
    if "smithy-protocol" in request.headers:
        raise LookupError(f"{signing}: the {request.headers['smithy-protocol']} protocol is not parsed here")
    if target:
        prefix, _, name = target.rpartition(".")
        if model.metadata.get("targetPrefix") != prefix:
            raise LookupError(f"{signing}: target prefix '{prefix}' is not {model.service_name}'s")
        return model, model.operation_model(name), "json"
    if model.metadata["protocol"] in ("query", "ec2"):
        action = _form(request).get("Action")
        if not action:
            raise LookupError(f"{signing}: a {model.metadata['protocol']} request without Action")
        return model, model.operation_model(action), model.metadata["protocol"]
    if model.metadata["protocol"] not in ("rest-json", "rest-xml"):
        raise LookupError(f"{signing}: {model.metadata['protocol']} requests ({content_type}) are not parsed here")
    return (model, *_rest_operation(model, request))


_rest_routes = {}


def _rest_routes_of(model):
    """Per operation: method, a regex of its path, the literal query parts it needs, a specificity."""
    if model.service_name not in _rest_routes:
        routes = []
        for name in model.operation_names:
            operation = model.operation_model(name)
            path, _, query = operation.http["requestUri"].partition("?")
            pattern = ""
            literal = 0
            for part in re.split(r"(\{[^}]+\})", path):
                if part.startswith("{"):
                    label = part[1:-1]
                    greedy = label.endswith("+")
                    pattern += f"(?P<{label.rstrip('+')}>{'.+' if greedy else '[^/]+'})"
                else:
                    pattern += re.escape(part)
                    literal += len(part)
            needs = [item.split("=", 1) for item in query.split("&") if item]
            # Operations on one path tell apart by what they require (CopyObject: x-amz-copy-source).
            shape = operation.input_shape
            required = shape.metadata.get("required", []) if shape is not None else []
            for member in required:
                serialization = shape.members[member].serialization
                if serialization.get("location") == "header":
                    needs.append(["header:" + serialization.get("name", member).lower()])
                elif serialization.get("location") == "querystring":
                    needs.append([serialization.get("name", member)])
            routes.append((operation.http["method"], re.compile(pattern + "/?$"), needs, literal + 100 * len(needs), name))
        _rest_routes[model.service_name] = routes
    return _rest_routes[model.service_name]


def _present(need, query, headers):
    key, *value = need
    if key.startswith("header:"):
        return key[7:] in headers
    return key in query and (not value or value[0] in query[key])


def _rest_operation(model, request):
    query = urllib.parse.parse_qs(request.query, keep_blank_values=True)
    best = None
    for method, pattern, needs, score, name in _rest_routes_of(model):
        if method != request.method:
            continue
        match = pattern.match(request.path)
        if not match or not all(_present(need, query, request.headers) for need in needs):
            continue
        if best is None or score > best[0]:
            best = (score, name, match)
    if best is None:
        raise LookupError(f"{model.service_name}: no operation is {request.method} {request.path}")
    labels = {key: urllib.parse.unquote(value) for key, value in best[2].groupdict().items()}
    return model.operation_model(best[1]), f"{model.metadata['protocol']}", labels


# ---- Reading the request back into the operation's input ----------------------------------

_MISSING = object()


def _scalar(shape, text):
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(text)
        if kind in ("float", "double"):
            return float(text)
        if kind == "boolean":
            return text in ("true", True)
        if kind == "blob":
            return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return text
    return text


def _query_name(name, shape, ec2):
    if ec2:
        if "queryName" in shape.serialization:
            return shape.serialization["queryName"]
        if "name" in shape.serialization:
            serialized = shape.serialization["name"]
            return serialized[0].upper() + serialized[1:]
        return name
    return shape.serialization.get("name", name)


def _has(flat, prefix):
    dotted = prefix + "."
    return prefix in flat or any(key.startswith(dotted) for key in flat)


def from_query(shape, flat, prefix, ec2):
    """The value of `shape` serialized under `prefix` by the query or EC2 protocol, or _MISSING."""
    kind = shape.type_name
    if kind == "structure":
        if prefix and not _has(flat, prefix):
            return _MISSING
        value = {}
        for name, member in shape.members.items():
            key = _query_name(name, member, ec2)
            item = from_query(member, flat, f"{prefix}.{key}" if prefix else key, ec2)
            if item is not _MISSING:
                value[name] = item
        return value
    if kind == "list":
        if not _has(flat, prefix):
            return _MISSING
        if ec2:
            item_prefix = prefix
        elif shape.serialization.get("flattened"):
            item_prefix = prefix
            if shape.member.serialization.get("name"):
                item_prefix = ".".join(prefix.split(".")[:-1] + [shape.member.serialization["name"]])
        else:
            item_prefix = f"{prefix}.{shape.member.serialization.get('name', 'member')}"
        items = []
        while True:
            item = from_query(shape.member, flat, f"{item_prefix}.{len(items) + 1}", ec2)
            if item is _MISSING:
                return items
            items.append(item)
    if kind == "map":
        if not _has(flat, prefix):
            return _MISSING
        entry = prefix if shape.serialization.get("flattened") else f"{prefix}.entry"
        key_name = shape.key.serialization.get("name", "key")
        value_name = shape.value.serialization.get("name", "value")
        value = {}
        index = 1
        while f"{entry}.{index}.{key_name}" in flat:
            item = from_query(shape.value, flat, f"{entry}.{index}.{value_name}", ec2)
            value[flat[f"{entry}.{index}.{key_name}"]] = None if item is _MISSING else item
            index += 1
        return value
    if prefix not in flat:
        return _MISSING
    return _scalar(shape, flat[prefix])


def from_json(shape, value):
    """The input from a JSON body (the json and rest-json protocols): serialized names to members."""
    kind = shape.type_name
    if value is None:
        return None
    if kind == "structure" and isinstance(value, dict):
        names = {member.serialization.get("name", name): name for name, member in shape.members.items()}
        return {
            names.get(key, key): from_json(shape.members[names[key]], item) if key in names else item
            for key, item in value.items()
        }
    if kind == "list" and isinstance(value, list):
        return [from_json(shape.member, item) for item in value]
    if kind == "map" and isinstance(value, dict):
        return {key: from_json(shape.value, item) for key, item in value.items()}
    if kind == "blob" and isinstance(value, str):
        return _scalar(shape, value)
    return value


def from_xml(shape, element):
    kind = shape.type_name
    if kind == "structure":
        value = {}
        for name, member in shape.members.items():
            tag = member.serialization.get("name", name)
            children = [child for child in element if child.tag.split("}")[-1] == tag]
            if not children:
                continue
            if member.type_name == "list" and member.serialization.get("flattened"):
                value[name] = [from_xml(member.member, child) for child in children]
            else:
                value[name] = from_xml(member, children[0])
        return value
    if kind == "list":
        return [from_xml(shape.member, child) for child in element]
    return _scalar(shape, element.text or "")


def parse(operation, protocol, request, labels=None):
    """The operation's input as the request carries it."""
    shape = operation.input_shape
    if shape is None:
        return {}
    if protocol in ("query", "ec2"):
        return from_query(shape, _form(request), "", protocol == "ec2")
    if protocol == "json":
        return from_json(shape, json.loads(request.body or b"{}"))
    query = urllib.parse.parse_qs(request.query, keep_blank_values=True)
    value = {}
    payload = shape.serialization.get("payload")
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        serialized = member.serialization.get("name", name)
        if location == "uri" and serialized in (labels or {}):
            value[name] = _scalar(member, labels[serialized])
        elif location == "querystring":
            if member.type_name == "map":
                value[name] = {key: items[-1] for key, items in query.items()}
            elif serialized in query:
                items = query[serialized]
                value[name] = [_scalar(member.member, i) for i in items] if member.type_name == "list" else _scalar(member, items[-1])
        elif location == "header" and serialized.lower() in request.headers:
            value[name] = _scalar(member, request.headers[serialized.lower()])
        elif location == "headers":
            start = serialized.lower()
            value[name] = {key[len(start) :]: item for key, item in request.headers.items() if key.startswith(start)}
        elif name == payload and member.type_name in ("blob", "string"):
            value[name] = request.body
    if payload and shape.members[payload].type_name == "structure" and request.body:
        body_shape = shape.members[payload]
        value[payload] = (
            from_json(body_shape, json.loads(request.body))
            if protocol == "rest-json"
            else from_xml(body_shape, ElementTree.fromstring(request.body))
        )
    elif not payload and request.body:
        if protocol == "rest-json":
            value.update(from_json(shape, json.loads(request.body)))
        else:
            value.update(from_xml(shape, ElementTree.fromstring(request.body)))
    return value


# ---- The model's constraints ----------------------------------------------------------------

_UNICODE_CLASSES = {r"\p{L}": r"^\W\d_", r"\p{N}": r"\d", r"\p{Z}": r"\s", r"\p{M}": r"\u0300-\u036f"}
_patterns = {}


def _pattern(text):
    """The model's pattern compiled for Python, or None when Python cannot read it."""
    if text not in _patterns:
        translated = text
        for java, python in _UNICODE_CLASSES.items():
            translated = translated.replace(f"[{java}", f"[{python}").replace(java, f"[{python}]")
        try:
            _patterns[text] = re.compile(translated, re.DOTALL)
        except re.error:
            _patterns[text] = None
    return _patterns[text]


def check_model(shape, value, path, findings, operation):
    def found(rule, shown_value):
        findings.append(Finding(operation, path or "(input)", rule, shown(shown_value)))

    kind = shape.type_name
    meta = shape.metadata
    if value is None:
        return
    if kind == "structure":
        if not isinstance(value, dict):
            return
        for required in meta.get("required", []):
            if required not in value:
                findings.append(Finding(operation, f"{path}.{required}".lstrip("."), "required by the model", "missing"))
        for name, item in value.items():
            if name in shape.members:
                check_model(shape.members[name], item, f"{path}.{name}".lstrip("."), findings, operation)
        return
    if kind in ("list", "map"):
        if not isinstance(value, (list, dict)):
            return
        if "min" in meta and len(value) < meta["min"]:
            found(f"at least {meta['min']} entries (model)", f"{len(value)} entries")
        if "max" in meta and len(value) > meta["max"]:
            found(f"at most {meta['max']} entries (model)", f"{len(value)} entries")
        if kind == "list":
            for index, item in enumerate(value):
                check_model(shape.member, item, f"{path}[{index}]", findings, operation)
        else:
            for key, item in value.items():
                check_model(shape.key, key, f"{path}.key", findings, operation)
                check_model(shape.value, item, f"{path}[{key}]", findings, operation)
        return
    if kind == "string" and isinstance(value, (str, bytes)):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        enum = getattr(shape, "enum", None) or meta.get("enum")
        if enum and text not in enum:
            found(f"one of the model's {len(enum)} values ({', '.join(enum[:6])}{', ...' if len(enum) > 6 else ''})", text)
        if "min" in meta and len(text) < meta["min"]:
            found(f"at least {meta['min']} characters (model)", text)
        if "max" in meta and len(text) > meta["max"]:
            found(f"at most {meta['max']} characters (model)", text)
        pattern = meta.get("pattern") and _pattern(meta["pattern"])
        if pattern and not pattern.fullmatch(text):
            found(f"the model's pattern {meta['pattern']}", text)
        return
    if kind == "blob" and isinstance(value, (bytes, str)):
        size = len(value)
        if "min" in meta and size < meta["min"]:
            found(f"at least {meta['min']} bytes (model)", f"{size} bytes")
        if "max" in meta and size > meta["max"]:
            found(f"at most {meta['max']} bytes (model)", f"{size} bytes")
        return
    if kind in ("integer", "long", "float", "double") and isinstance(value, (int, float)):
        if "min" in meta and value < meta["min"]:
            found(f"at least {meta['min']} (model)", value)
        if "max" in meta and value > meta["max"]:
            found(f"at most {meta['max']} (model)", value)


# ---- The documented limits the models do not carry -----------------------------------------


def _size(text):
    return len(text.encode("utf-8") if isinstance(text, str) else text)


def _tags(tags, path, operation, source):
    """Tag restrictions; the same numbers for EC2, CloudFormation and Scheduler."""
    findings = []
    tags = tags or []
    if len(tags) > 50:
        findings.append(Finding(operation, path, f"at most 50 tags per resource ({source})", f"{len(tags)} tags"))
    for index, tag in enumerate(tags):
        key, value = tag.get("Key", ""), tag.get("Value", "")
        if not 1 <= len(key) <= 128:
            findings.append(Finding(operation, f"{path}[{index}].Key", f"1 to 128 characters ({source})", shown(key)))
        if len(value) > 256:
            findings.append(Finding(operation, f"{path}[{index}].Value", f"at most 256 characters ({source})", shown(value)))
        if key.lower().startswith("aws:"):
            findings.append(Finding(operation, f"{path}[{index}].Key", f"no 'aws:' prefix ({source})", key))
    return findings


# EC2 user guide, "Instance user data": "User data is limited to 16 KB, in raw form, before it is
# base64-encoded."
EC2_USER_DATA_BYTES = 16 * 1024
# EC2 API reference, "Ensure idempotency": "A client token is a unique, case-sensitive string of
# up to 64 ASCII characters."
EC2_CLIENT_TOKEN_CHARACTERS = 64
# EC2 user guide, "Tag your Amazon EC2 resources", tag restrictions: 50 tags per resource, keys of
# 128 and values of 256 Unicode characters, no aws: prefix. CloudFormation's and Scheduler's
# tagging pages give the same numbers.
EC2_TAGS = "EC2 tag restrictions"
# CloudFormation user guide, "CloudFormation quotas": template body size in a request 51,200 bytes;
# parameter value 4,096 bytes; 200 parameters; 50 tags.
CFN_TEMPLATE_BODY_BYTES = 51_200
CFN_PARAMETER_VALUE_BYTES = 4_096
CFN_PARAMETERS = 200
# EventBridge Scheduler user guide, "Schedule types": a one-time schedule is at(yyyy-mm-ddThh:mm:ss),
# with no zone or fraction; rate(value unit) and cron(six fields) are the recurring forms.
SCHEDULER_EXPRESSION = re.compile(
    r"at\(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\)"
    r"|rate\([1-9][0-9]* (minute|minutes|hour|hours|day|days)\)"
    r"|cron\(\S+ \S+ \S+ \S+ \S+ \S+\)"
)
# SNS API reference, Publish: "Subjects must be UTF-8 text with no line breaks or control
# characters, and less than 100 characters long"; a message is at most 256 KB (262,144 bytes).
SNS_SUBJECT_CHARACTERS = 99
SNS_MESSAGE_BYTES = 262_144
# DynamoDB developer guide, "Quotas": an item is at most 400 KB, attribute names and values
# counted in UTF-8; a partition key value at most 2,048 bytes, a sort key value 1,024; an
# expression string at most 4 KB.
DYNAMODB_ITEM_BYTES = 400 * 1024
DYNAMODB_PARTITION_KEY_BYTES = 2_048
DYNAMODB_EXPRESSION_BYTES = 4 * 1024
# Lambda developer guide, "Lambda quotas": a synchronous invocation's response payload is at
# most 6 MB. Checked on the responses the tests receive (tests/support and tools/invoke.py).
LAMBDA_RESPONSE_BYTES = 6 * 1024 * 1024


def _ec2_run_instances(params, operation):
    findings = []
    user_data = params.get("UserData")
    if user_data is not None:
        try:
            raw = base64.b64decode(user_data, validate=True)
        except (binascii.Error, ValueError):
            findings.append(Finding(operation, "UserData", "base64 (EC2 API reference)", shown(user_data)))
            raw = b""
        if len(raw) > EC2_USER_DATA_BYTES:
            findings.append(
                Finding(operation, "UserData", f"at most {EC2_USER_DATA_BYTES} bytes raw (EC2 user guide)", f"{len(raw)} bytes")
            )
    token = params.get("ClientToken")
    if token is not None and (len(token) > EC2_CLIENT_TOKEN_CHARACTERS or not token.isascii()):
        findings.append(
            Finding(operation, "ClientToken", f"at most {EC2_CLIENT_TOKEN_CHARACTERS} ASCII characters (EC2 API reference)", token)
        )
    for index, spec in enumerate(params.get("TagSpecifications") or []):
        findings += _tags(spec.get("Tags"), f"TagSpecifications[{index}].Tags", operation, EC2_TAGS)
    findings += [Finding(operation, member, rule, value) for member, rule, value in launch_findings(params)]
    return findings


def _ec2_create_tags(params, operation):
    return _tags(params.get("Tags"), "Tags", operation, EC2_TAGS)


def _cfn_stack(params, operation):
    findings = []
    body = params.get("TemplateBody")
    if body is not None and _size(body) > CFN_TEMPLATE_BODY_BYTES:
        findings.append(
            Finding(operation, "TemplateBody", f"at most {CFN_TEMPLATE_BODY_BYTES} bytes (CloudFormation quotas)", f"{_size(body)} bytes")
        )
    parameters = params.get("Parameters") or []
    if len(parameters) > CFN_PARAMETERS:
        findings.append(Finding(operation, "Parameters", f"at most {CFN_PARAMETERS} (CloudFormation quotas)", len(parameters)))
    for index, parameter in enumerate(parameters):
        value = parameter.get("ParameterValue") or ""
        if _size(value) > CFN_PARAMETER_VALUE_BYTES:
            findings.append(
                Finding(
                    operation,
                    f"Parameters[{index}].ParameterValue ({parameter.get('ParameterKey')})",
                    f"at most {CFN_PARAMETER_VALUE_BYTES} bytes (CloudFormation quotas)",
                    f"{_size(value)} bytes",
                )
            )
    findings += _tags(params.get("Tags"), "Tags", operation, "CloudFormation quotas")
    return findings


def _scheduler_schedule(params, operation):
    expression = params.get("ScheduleExpression")
    if expression is not None and not SCHEDULER_EXPRESSION.fullmatch(expression):
        return [Finding(operation, "ScheduleExpression", "at(yyyy-mm-ddThh:mm:ss), rate() or cron() (Scheduler user guide)", expression)]
    return []


def _sns_publish(params, operation):
    findings = []
    subject = params.get("Subject")
    if subject is not None:
        if len(subject) > SNS_SUBJECT_CHARACTERS or any(ord(c) < 32 or ord(c) == 127 for c in subject):
            findings.append(
                Finding(operation, "Subject", "less than 100 characters, no line breaks or control characters (SNS API reference)", repr(subject))
            )
    message = params.get("Message") or ""
    if _size(message) > SNS_MESSAGE_BYTES:
        findings.append(Finding(operation, "Message", f"at most {SNS_MESSAGE_BYTES} bytes (SNS API reference)", f"{_size(message)} bytes"))
    return findings


def dynamodb_value_size(value):
    """The size DynamoDB counts for an attribute value (its "Item sizes" page)."""
    (kind, item), = value.items()
    if kind == "S":
        return _size(item)
    if kind == "N":
        digits = item.lstrip("-").replace(".", "").strip("0")
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(base64.b64decode(item)) if isinstance(item, str) else len(item)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(_size(s) for s in item)
    if kind == "NS":
        return sum(dynamodb_value_size({"N": n}) for n in item)
    if kind == "BS":
        return sum(len(b) for b in item)
    if kind == "L":
        return 3 + sum(1 + dynamodb_value_size(v) for v in item)
    if kind == "M":
        return 3 + sum(1 + _size(k) + dynamodb_value_size(v) for k, v in item.items())
    return 0


def dynamodb_item_size(item):
    return sum(_size(name) + dynamodb_value_size(value) for name, value in item.items())


def _dynamodb_key(key, path, operation):
    findings = []
    for name, value in (key or {}).items():
        size = dynamodb_value_size(value)
        if size > DYNAMODB_PARTITION_KEY_BYTES:
            findings.append(Finding(operation, f"{path}.{name}", f"a key value of at most {DYNAMODB_PARTITION_KEY_BYTES} bytes (DynamoDB quotas)", f"{size} bytes"))
    return findings


def _dynamodb_write(params, operation):
    findings = []
    item = params.get("Item")
    if item is not None:
        size = dynamodb_item_size(item)
        if size > DYNAMODB_ITEM_BYTES:
            findings.append(Finding(operation, "Item", f"at most {DYNAMODB_ITEM_BYTES} bytes (DynamoDB quotas)", f"{size} bytes"))
    findings += _dynamodb_key(params.get("Key") or {}, "Key", operation)
    for name in ("UpdateExpression", "ConditionExpression", "KeyConditionExpression", "FilterExpression", "ProjectionExpression"):
        if name in params and _size(params[name]) > DYNAMODB_EXPRESSION_BYTES:
            findings.append(Finding(operation, name, f"at most {DYNAMODB_EXPRESSION_BYTES} bytes (DynamoDB quotas)", f"{_size(params[name])} bytes"))
    return findings


# (service, operation) -> the documented limits of its input. An UpdateItem's resulting item is
# checked after moto applied it (check_after), since only then is its size known.
LIMITS = {
    ("ec2", "RunInstances"): _ec2_run_instances,
    ("ec2", "CreateTags"): _ec2_create_tags,
    ("cloudformation", "CreateStack"): _cfn_stack,
    ("cloudformation", "UpdateStack"): _cfn_stack,
    ("cloudformation", "CreateChangeSet"): _cfn_stack,
    ("cloudformation", "ValidateTemplate"): _cfn_stack,
    ("scheduler", "CreateSchedule"): _scheduler_schedule,
    ("scheduler", "UpdateSchedule"): _scheduler_schedule,
    ("sns", "Publish"): _sns_publish,
    ("dynamodb", "PutItem"): _dynamodb_write,
    ("dynamodb", "UpdateItem"): _dynamodb_write,
    ("dynamodb", "DeleteItem"): _dynamodb_write,
    ("dynamodb", "GetItem"): _dynamodb_write,
    ("dynamodb", "Query"): _dynamodb_write,
    ("dynamodb", "Scan"): _dynamodb_write,
}


# ---- One request --------------------------------------------------------------------------


def check(request):
    """Everything AWS would refuse in `request`; None when it is not a signed AWS request."""
    checked = Checked(agent=_agent(request.headers))
    try:
        found = identify(request)
    except Exception as error:  # noqa: BLE001 (any failure to identify is a finding)
        checked.service, checked.operation = _signing_name(request.headers) or "?", "?"
        checked.findings.append(Finding(f"{checked.service} ?", "(request)", "identified as an AWS operation", str(error)))
        return checked
    if found is None:
        return None
    model, operation, protocol, *labels = found
    checked.service, checked.operation = model.service_name, operation.name
    name = f"{model.metadata.get('serviceId', model.service_name)} {operation.name}"
    try:
        params = parse(operation, protocol, request, labels[0] if labels else None)
    except (ValueError, ElementTree.ParseError) as error:
        checked.findings.append(Finding(name, "(body)", f"a {protocol} body", str(error)))
        return checked
    if operation.input_shape is not None:
        check_model(operation.input_shape, params, "", checked.findings, name)
    limit = LIMITS.get((model.service_name, operation.name))
    if limit:
        checked.findings += limit(params, name)
    checked.params = params
    return checked


def check_updated_item(table, size, operation="DynamoDB UpdateItem"):
    if size > DYNAMODB_ITEM_BYTES:
        return [Finding(operation, f"the item in {table}", f"at most {DYNAMODB_ITEM_BYTES} bytes after the update (DynamoDB quotas)", f"{size} bytes")]
    return []


# ---- The log and its report -----------------------------------------------------------------

_log_lock = threading.Lock()


def record(checked, path=None):
    path = path or os.environ.get("PROVISIONER_AWS_GUARD_LOG")
    if not path or checked is None:
        return
    line = {
        "service": checked.service,
        "operation": checked.operation,
        "agent": checked.agent,
        "findings": [asdict(f) for f in checked.findings],
    }
    with _log_lock, open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")


def report(path):
    """Prints the tally of a guard log; 1 when any request would have been refused."""
    if not os.path.exists(path):
        print(f"aws-guard: no requests were recorded ({path} is missing)", file=sys.stderr)
        return 1
    requests, by_agent, operations, findings = 0, Counter(), Counter(), []
    with open(path, encoding="utf-8") as log:
        for line in log:
            entry = json.loads(line)
            requests += 1
            by_agent[entry["agent"]] += 1
            operations[f"{entry['service']} {entry['operation']}"] += 1
            findings += [(entry["agent"], Finding(**f)) for f in entry["findings"]]
    agents = ", ".join(f"{count} from {agent}" for agent, count in by_agent.most_common())
    print(f"aws-guard: {requests} requests to the emulator ({agents}), {len(operations)} operations, checked against AWS's models and limits")
    distinct = sorted({(agent, str(f)) for agent, f in findings})
    for agent, text in distinct:
        print(f"  refused by AWS ({agent}): {text}")
    print(f"aws-guard: {len(findings)} requests AWS would refuse ({len(distinct)} distinct)")
    return 1 if findings else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "report":
        sys.exit(report(sys.argv[2]))
    print("usage: aws_guard.py report LOG", file=sys.stderr)
    sys.exit(2)
