"""Read a SAM/CloudFormation template and resolve its intrinsic functions.

The local runtime reads ``template.yaml`` itself so the wiring under test is the wiring that
deploys. Parsing uses PyYAML with constructors for the short-form tags (``!Ref``, ``!GetAtt``,
``!Sub`` ...), turning them into the long form (``{"Ref": ...}``), as CloudFormation does.
Resolution needs the physical names of other resources, so it is driven by a callback that the
runtime answers once it has created the referenced resource (see ``Resolver``).
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NO_VALUE = object()  # AWS::NoValue: drops the key or list item that holds it


class TemplateError(ValueError):
    """The template uses something the local runtime cannot resolve."""


# --------------------------------------------------------------------------- parsing

_TAGS = {
    "!Ref": "Ref",
    "!Condition": "Condition",
    "!GetAtt": "Fn::GetAtt",
    "!Sub": "Fn::Sub",
    "!Join": "Fn::Join",
    "!If": "Fn::If",
    "!Equals": "Fn::Equals",
    "!Not": "Fn::Not",
    "!And": "Fn::And",
    "!Or": "Fn::Or",
    "!Select": "Fn::Select",
    "!Split": "Fn::Split",
    "!FindInMap": "Fn::FindInMap",
    "!GetAZs": "Fn::GetAZs",
    "!ImportValue": "Fn::ImportValue",
    "!Base64": "Fn::Base64",
    "!Cidr": "Fn::Cidr",
    "!ToJsonString": "Fn::ToJsonString",
    "!Length": "Fn::Length",
}


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation's short-form tags."""


def _make_constructor(name: str) -> Callable[[yaml.Loader, yaml.Node], dict[str, Any]]:
    def construct(loader: yaml.Loader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if name == "Fn::GetAtt":
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    return construct


for _tag, _name in _TAGS.items():
    _CfnLoader.add_constructor(_tag, _make_constructor(_name))


def load_template(path: str | Path) -> dict[str, Any]:
    """Parse a template file (YAML or JSON) into plain Python with long-form intrinsics."""
    text = Path(path).read_text()
    data = yaml.load(text, Loader=_CfnLoader)
    if not isinstance(data, dict) or "Resources" not in data:
        raise TemplateError(f"{path}: not a CloudFormation template (no Resources)")
    return data


# --------------------------------------------------------------------------- model


@dataclass
class Context:
    """Pseudo parameters and parameter values for one local stack."""

    stack_name: str
    region: str
    account_id: str
    partition: str = "aws"
    parameters: dict[str, Any] = field(default_factory=dict)

    def pseudo(self, name: str) -> Any:
        table = {
            "AWS::StackName": self.stack_name,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:{self.partition}:cloudformation:{self.region}:{self.account_id}:stack/{self.stack_name}/local",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }
        if name not in table:
            raise TemplateError(f"unknown pseudo parameter {name}")
        return table[name]


def parameter_values(template: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Parameter values: overrides, else defaults; a parameter with neither is an error."""
    values: dict[str, Any] = {}
    overrides = overrides or {}
    for name, spec in (template.get("Parameters") or {}).items():
        if name in overrides:
            value = overrides[name]
        elif "Default" in spec:
            value = spec["Default"]
        else:
            raise TemplateError(f"parameter {name} has no Default; pass it in parameters=")
        allowed = spec.get("AllowedValues")
        if allowed is not None and value not in allowed:
            raise TemplateError(f"parameter {name}={value!r} not in AllowedValues {allowed}")
        pattern = spec.get("AllowedPattern")
        if pattern is not None and re.fullmatch(pattern, str(value)) is None:
            hint = spec.get("ConstraintDescription") or f"a match of AllowedPattern {pattern}"
            raise TemplateError(f"parameter {name}={value!r}: must be {hint}")
        if str(spec.get("Type", "String")).startswith("List<") or spec.get("Type") == "CommaDelimitedList":
            value = value if isinstance(value, list) else [v.strip() for v in str(value).split(",")]
        values[name] = value
    unknown = set(overrides) - set(values)
    if unknown:
        raise TemplateError(f"unknown parameters: {sorted(unknown)}")
    return values


def physical_id(stack: str, logical_id: str, *, lower: bool = False, max_len: int = 64) -> str:
    """A CloudFormation-like generated name: ``<stack>-<LogicalId>-<SUFFIX>``, deterministic."""
    suffix = hashlib.sha1(f"{stack}/{logical_id}".encode()).hexdigest()[:12].upper()
    prefix = f"{stack}-{logical_id}"[: max_len - len(suffix) - 1]
    name = f"{prefix}-{suffix}"
    return name.lower() if lower else name


# --------------------------------------------------------------------------- dependencies


def references(value: Any) -> set[str]:
    """Logical ids (or pseudo/parameter names) that ``value`` refers to through intrinsics."""
    found: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            if len(v) == 1:
                ((k, arg),) = v.items()
                if k == "Ref" and isinstance(arg, str):
                    found.add(arg.split(".", 1)[0])
                    return
                if k == "Fn::GetAtt":
                    target = arg[0] if isinstance(arg, list) else str(arg).split(".", 1)[0]
                    found.add(str(target).split(".", 1)[0])
                    return
                if k == "Fn::Sub":
                    text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                    for var in re.findall(r"\$\{([^}!]+)\}", text):
                        if var not in extra:
                            found.add(var.split(".", 1)[0])
                    walk(extra)
                    return
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(value)
    return found


def creation_order(resources: dict[str, Any], implicit: dict[str, str] | None = None) -> list[str]:
    """Resources sorted so each comes after what it references or DependsOn (a DAG in CFN).

    ``implicit`` maps names SAM generates (``FooFunctionAliaslive``) to the logical id that owns
    them, so a reference to a generated name orders after its owner.
    """
    implicit = implicit or {}
    deps: dict[str, set[str]] = {}
    for name, spec in resources.items():
        refs = references(spec.get("Properties", {})) | references(spec.get("Condition", []))
        depends = spec.get("DependsOn", [])
        refs |= set([depends] if isinstance(depends, str) else depends)
        refs = {implicit.get(r, r) for r in refs}
        deps[name] = {r for r in refs if r in resources and r != name}
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise TemplateError(f"circular dependency: {' -> '.join([*path, n])}")
        state[n] = 1
        for d in sorted(deps[n]):
            visit(d, [*path, n])
        state[n] = 2
        order.append(n)

    for n in resources:
        visit(n, [])
    return order


# --------------------------------------------------------------------------- resolution


RefLookup = Callable[[str], Any]
AttLookup = Callable[[str, str], Any]


class Resolver:
    """Evaluates intrinsic functions against parameters, conditions and created resources."""

    def __init__(
        self,
        template: dict[str, Any],
        context: Context,
        ref: RefLookup,
        get_att: AttLookup,
    ) -> None:
        self.template = template
        self.context = context
        self._ref = ref
        self._get_att = get_att
        self._conditions: dict[str, bool] = {}

    # conditions -------------------------------------------------------------
    def condition(self, name: str) -> bool:
        """The value of a named condition from the Conditions section (memoised)."""
        if name not in self._conditions:
            spec = (self.template.get("Conditions") or {}).get(name)
            if spec is None:
                raise TemplateError(f"unknown condition {name}")
            self._conditions[name] = bool(self.resolve(spec))
        return self._conditions[name]

    # values -----------------------------------------------------------------
    def ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            return self.context.pseudo(name)
        if name in self.context.parameters:
            return self.context.parameters[name]
        return self._ref(name)

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic evaluated; ``NO_VALUE`` entries removed."""
        if isinstance(value, list):
            out = [self.resolve(v) for v in value]
            return [v for v in out if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            fn = _FUNCTIONS.get(key)
            if fn is not None:
                return fn(self, arg)
        out = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not NO_VALUE}

    def sub(self, arg: Any) -> str:
        if isinstance(arg, str):
            text, variables = arg, {}
        else:
            text, variables = arg[0], self.resolve(arg[1])

        def replace(match: re.Match[str]) -> str:
            var = match.group(1)
            if var.startswith("!"):
                return "${" + var[1:] + "}"
            if var in variables:
                return str(variables[var])
            if "." in var and not var.startswith("AWS::"):
                logical, att = var.split(".", 1)
                return str(self._get_att(logical, att))
            return str(self.ref(var))

        return re.sub(r"\$\{([^}]+)\}", replace, text)


def _fn_if(r: Resolver, arg: list[Any]) -> Any:
    name, yes, no = arg
    return r.resolve(yes if r.condition(name) else no)


def _fn_get_att(r: Resolver, arg: Any) -> Any:
    logical, att = (arg if isinstance(arg, list) else str(arg).split(".", 1))[:2]
    return r._get_att(str(r.resolve(logical)), str(r.resolve(att)))


def _fn_select(r: Resolver, arg: list[Any]) -> Any:
    index, items = r.resolve(arg[0]), r.resolve(arg[1])
    return items[int(index)]


def _fn_find_in_map(r: Resolver, arg: list[Any]) -> Any:
    m, k1, k2 = (r.resolve(a) for a in arg[:3])
    try:
        return r.template["Mappings"][m][k1][k2]
    except KeyError as exc:
        raise TemplateError(f"Fn::FindInMap {m}/{k1}/{k2} not found") from exc


def _fn_to_json(r: Resolver, arg: Any) -> str:
    import json

    return json.dumps(r.resolve(arg), separators=(",", ":"))


def _unsupported(name: str) -> Callable[[Resolver, Any], Any]:
    def fn(r: Resolver, arg: Any) -> Any:
        raise TemplateError(f"{name} is not supported by the local runtime")

    return fn


_FUNCTIONS: dict[str, Callable[[Resolver, Any], Any]] = {
    "Ref": lambda r, a: r.ref(str(r.resolve(a))),
    "Condition": lambda r, a: r.condition(a),
    "Fn::GetAtt": _fn_get_att,
    "Fn::Sub": lambda r, a: r.sub(a),
    "Fn::Join": lambda r, a: str(r.resolve(a[0])).join(str(x) for x in r.resolve(a[1])),
    "Fn::If": _fn_if,
    "Fn::Equals": lambda r, a: r.resolve(a[0]) == r.resolve(a[1]),
    "Fn::Not": lambda r, a: not r.resolve(a[0] if isinstance(a, list) else a),
    "Fn::And": lambda r, a: all(r.resolve(x) for x in a),
    "Fn::Or": lambda r, a: any(r.resolve(x) for x in a),
    "Fn::Select": _fn_select,
    "Fn::Split": lambda r, a: str(r.resolve(a[1])).split(str(r.resolve(a[0]))),
    "Fn::FindInMap": _fn_find_in_map,
    "Fn::GetAZs": lambda r, a: [f"{r.context.region}{z}" for z in "abc"],
    "Fn::Base64": lambda r, a: __import__("base64").b64encode(str(r.resolve(a)).encode()).decode(),
    "Fn::ToJsonString": _fn_to_json,
    "Fn::Length": lambda r, a: len(r.resolve(a)),
    "Fn::ImportValue": _unsupported("Fn::ImportValue"),
    "Fn::Cidr": _unsupported("Fn::Cidr"),
}


# --------------------------------------------------------------------------- SAM globals


def apply_globals(template: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``template`` with the SAM ``Globals`` merged into each serverless resource.

    SAM merge rules: maps merge (resource wins), lists are concatenated (globals first),
    scalars from the resource replace the global value.
    """
    out = copy.deepcopy(template)
    globals_ = out.get("Globals") or {}
    kinds = {
        "Function": "AWS::Serverless::Function",
        "HttpApi": "AWS::Serverless::HttpApi",
        "Api": "AWS::Serverless::Api",
        "SimpleTable": "AWS::Serverless::SimpleTable",
        "StateMachine": "AWS::Serverless::StateMachine",
        "LayerVersion": "AWS::Serverless::LayerVersion",
    }
    for section, type_ in kinds.items():
        base = globals_.get(section)
        if not base:
            continue
        for spec in out["Resources"].values():
            if spec.get("Type") == type_:
                spec["Properties"] = _merge(base, spec.get("Properties") or {})
    return out


def _merge(base: Any, over: Any) -> Any:
    if (
        isinstance(base, dict)
        and isinstance(over, dict)
        and not _is_intrinsic(base)
        and not _is_intrinsic(over)
    ):
        merged = copy.deepcopy(base)
        for k, v in over.items():
            merged[k] = _merge(base[k], v) if k in base else copy.deepcopy(v)
        return merged
    if isinstance(base, list) and isinstance(over, list):
        return copy.deepcopy(base) + copy.deepcopy(over)
    return copy.deepcopy(over)


def _is_intrinsic(v: dict[str, Any]) -> bool:
    return len(v) == 1 and next(iter(v)) in _FUNCTIONS


def iter_function_events(spec: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    """(name, type, properties) of each event source of a serverless function."""
    for name, event in ((spec.get("Properties") or {}).get("Events") or {}).items():
        yield name, event.get("Type", ""), event.get("Properties") or {}
