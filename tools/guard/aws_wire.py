"""Reads a request sent to the AWS emulator back into its operation's input, with botocore's
service models: which service signed it, which operation it is (by protocol: the JSON target,
the query Action, or the REST method and path), and the members it carries, member by member,
as the JSON, query, EC2 and REST protocols serialize them. tools/aws_guard.py checks the result.
"""

import base64
import binascii
import json
import re
import threading
import urllib.parse
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

import botocore.session

_session = botocore.session.get_session()
_models = {}
_models_lock = threading.Lock()


@dataclass
class Request:
    method: str
    path: str  # undecoded, without the query
    query: str
    headers: dict  # lower-case names
    body: bytes


# ---- Identifying the operation -------------------------------------------------------------


def _model(service):
    with _models_lock:
        if service not in _models:
            try:
                _models[service] = _session.get_service_model(service)
            except Exception:  # an unknown service name
                _models[service] = None
        return _models[service]


def signing_name(headers):
    match = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request", headers.get("authorization", ""))
    return match.group(1) if match else None


def region_of(headers):
    match = re.search(r"Credential=[^/]+/[^/]+/([^/]+)/", headers.get("authorization", ""))
    return match.group(1) if match else "us-east-1"


def _form(request):
    text = request.body.decode("utf-8", "replace") if request.method != "GET" else request.query
    return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))


def identify(request):
    """(model, operation model, protocol) of a signed request, or None when it is not an AWS call."""
    signing = signing_name(request.headers)
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
            routes.append(
                (operation.http["method"], re.compile(pattern + "/?$"), needs, literal + 100 * len(needs), name)
            )
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
                value[name] = (
                    [_scalar(member.member, i) for i in items]
                    if member.type_name == "list"
                    else _scalar(member, items[-1])
                )
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
