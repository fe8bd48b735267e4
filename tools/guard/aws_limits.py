"""What AWS refuses of an operation's input: the constraints of its model (required members,
enums, lengths, ranges, patterns) and the documented limits the models do not carry, each with
its source. tools/aws_guard.py applies them to every request the emulator receives.
"""

import base64
import binascii
import re
from dataclasses import dataclass

from guard.launch_rules import launch_findings


@dataclass
class Finding:
    operation: str  # "EC2 RunInstances"
    member: str  # "TagSpecifications[0].Tags[3].Key"
    rule: str  # "max length 128 (EC2 tag restrictions)"
    value: str  # what was sent, shortened

    def __str__(self):
        return f"{self.operation}: {self.member}: {self.rule}: {self.value}"


def shown(value, limit=80):
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


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
                findings.append(
                    Finding(operation, f"{path}.{required}".lstrip("."), "required by the model", "missing")
                )
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
            found(
                f"one of the model's {len(enum)} values ({', '.join(enum[:6])}{', ...' if len(enum) > 6 else ''})", text
            )
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
            findings.append(
                Finding(operation, f"{path}[{index}].Value", f"at most 256 characters ({source})", shown(value))
            )
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
                Finding(
                    operation,
                    "UserData",
                    f"at most {EC2_USER_DATA_BYTES} bytes raw (EC2 user guide)",
                    f"{len(raw)} bytes",
                )
            )
    token = params.get("ClientToken")
    if token is not None and (len(token) > EC2_CLIENT_TOKEN_CHARACTERS or not token.isascii()):
        findings.append(
            Finding(
                operation,
                "ClientToken",
                f"at most {EC2_CLIENT_TOKEN_CHARACTERS} ASCII characters (EC2 API reference)",
                token,
            )
        )
    for index, spec in enumerate(params.get("TagSpecifications") or []):
        findings += _tags(spec.get("Tags"), f"TagSpecifications[{index}].Tags", operation, EC2_TAGS)
    findings += [Finding(operation, member, rule, value) for member, rule, value in launch_findings(params)]
    return findings


# EC2 API reference, CreateImage: "Name: A name for the new image. Constraints: 3-128 alphanumeric
# characters, parentheses (()), square brackets ([]), spaces ( ), periods (.), slashes (/),
# dashes (-), single quotes ('), at-signs (@), or underscores(_)"; a description of up to 255
# characters.
EC2_IMAGE_NAME = re.compile(r"[A-Za-z0-9()\[\] ./\-'@_]{3,128}")
EC2_IMAGE_DESCRIPTION_CHARACTERS = 255


def _ec2_create_image(params, operation):
    findings = []
    name = params.get("Name", "")
    if not EC2_IMAGE_NAME.fullmatch(name):
        findings.append(
            Finding(operation, "Name", "3 to 128 of letters, digits and ()[] ./-'@_ (EC2 API reference)", shown(name))
        )
    description = params.get("Description") or ""
    if len(description) > EC2_IMAGE_DESCRIPTION_CHARACTERS:
        findings.append(
            Finding(
                operation,
                "Description",
                f"at most {EC2_IMAGE_DESCRIPTION_CHARACTERS} characters (EC2 API reference)",
                shown(description),
            )
        )
    for index, spec in enumerate(params.get("TagSpecifications") or []):
        findings += _tags(spec.get("Tags"), f"TagSpecifications[{index}].Tags", operation, EC2_TAGS)
    return findings


def _ec2_create_tags(params, operation):
    return _tags(params.get("Tags"), "Tags", operation, EC2_TAGS)


def _cfn_stack(params, operation):
    findings = []
    body = params.get("TemplateBody")
    if body is not None and _size(body) > CFN_TEMPLATE_BODY_BYTES:
        findings.append(
            Finding(
                operation,
                "TemplateBody",
                f"at most {CFN_TEMPLATE_BODY_BYTES} bytes (CloudFormation quotas)",
                f"{_size(body)} bytes",
            )
        )
    parameters = params.get("Parameters") or []
    if len(parameters) > CFN_PARAMETERS:
        findings.append(
            Finding(operation, "Parameters", f"at most {CFN_PARAMETERS} (CloudFormation quotas)", len(parameters))
        )
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
        return [
            Finding(
                operation,
                "ScheduleExpression",
                "at(yyyy-mm-ddThh:mm:ss), rate() or cron() (Scheduler user guide)",
                expression,
            )
        ]
    return []


def _sns_publish(params, operation):
    findings = []
    subject = params.get("Subject")
    if subject is not None:
        if len(subject) > SNS_SUBJECT_CHARACTERS or any(ord(c) < 32 or ord(c) == 127 for c in subject):
            findings.append(
                Finding(
                    operation,
                    "Subject",
                    "less than 100 characters, no line breaks or control characters (SNS API reference)",
                    repr(subject),
                )
            )
    message = params.get("Message") or ""
    if _size(message) > SNS_MESSAGE_BYTES:
        findings.append(
            Finding(
                operation,
                "Message",
                f"at most {SNS_MESSAGE_BYTES} bytes (SNS API reference)",
                f"{_size(message)} bytes",
            )
        )
    return findings


def dynamodb_value_size(value):
    """The size DynamoDB counts for an attribute value (its "Item sizes" page)."""
    ((kind, item),) = value.items()
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
            findings.append(
                Finding(
                    operation,
                    f"{path}.{name}",
                    f"a key value of at most {DYNAMODB_PARTITION_KEY_BYTES} bytes (DynamoDB quotas)",
                    f"{size} bytes",
                )
            )
    return findings


def _dynamodb_write(params, operation):
    findings = []
    item = params.get("Item")
    if item is not None:
        size = dynamodb_item_size(item)
        if size > DYNAMODB_ITEM_BYTES:
            findings.append(
                Finding(operation, "Item", f"at most {DYNAMODB_ITEM_BYTES} bytes (DynamoDB quotas)", f"{size} bytes")
            )
    findings += _dynamodb_key(params.get("Key") or {}, "Key", operation)
    for name in (
        "UpdateExpression",
        "ConditionExpression",
        "KeyConditionExpression",
        "FilterExpression",
        "ProjectionExpression",
    ):
        if name in params and _size(params[name]) > DYNAMODB_EXPRESSION_BYTES:
            findings.append(
                Finding(
                    operation,
                    name,
                    f"at most {DYNAMODB_EXPRESSION_BYTES} bytes (DynamoDB quotas)",
                    f"{_size(params[name])} bytes",
                )
            )
    return findings


# (service, operation) -> the documented limits of its input. An UpdateItem's resulting item is
# checked after moto applied it (check_after), since only then is its size known.
LIMITS = {
    ("ec2", "RunInstances"): _ec2_run_instances,
    ("ec2", "CreateTags"): _ec2_create_tags,
    ("ec2", "CreateImage"): _ec2_create_image,
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


def check_updated_item(table, size, operation="DynamoDB UpdateItem"):
    if size > DYNAMODB_ITEM_BYTES:
        return [
            Finding(
                operation,
                f"the item in {table}",
                f"at most {DYNAMODB_ITEM_BYTES} bytes after the update (DynamoDB quotas)",
                f"{size} bytes",
            )
        ]
    return []
