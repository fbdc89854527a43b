"""What Kubernetes API calls a service's code makes, read from its source with `ast`.

A call is a use of a method of the official client's API classes (`CoreV1Api().create_namespaced_pod`,
`CustomObjectsApi().list_cluster_custom_object(group, version, plural)`, …), mapped to the RBAC triple
(apiGroup, resource, verb) it needs. A list method used as a value (handed to `watch.Watch().stream` or to a
list+watch loop) needs `list` and `watch`; one called with `watch=True` needs `watch`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

VERBS = {
    "create": "create",
    "read": "get",
    "get": "get",
    "list": "list",
    "patch": "patch",
    "replace": "update",
    "delete": "delete",
    "delete_collection": "deletecollection",
}
_METHOD = re.compile(
    r"^(?P<verb>delete_collection|create|read|get|list|patch|replace|delete)_(?P<namespaced>namespaced_)?"
    r"(?P<resource>[a-z_]+?)(?P<all>_for_all_namespaces)?(?P<sub>_status|_scale|_log|_binding|_eviction)?$"
)
_CUSTOM_ARGS = {  # positional parameters of CustomObjectsApi methods, after self
    "namespaced": ("group", "version", "namespace", "plural"),
    "cluster": ("group", "version", "plural"),
}
_IRREGULAR = {"endpoints": "endpoints"}


@dataclass(frozen=True)
class Permission:
    group: str
    resource: str
    verb: str

    def __str__(self) -> str:
        return f"{self.group or 'core'}/{self.resource}:{self.verb}"


def _api_groups() -> dict[str, set[str]]:
    """method name → API groups of the client classes that define it ("custom" for CustomObjectsApi).

    Read from the client's source (kubernetes/client/api/<group>_<version>_api.py): importing the classes
    imports every model, which takes seconds."""
    methods: dict[str, set[str]] = {}
    for path in sorted((Path(client.__file__).parent / "api").glob("*_api.py")):
        stem = path.name.removesuffix("_api.py")
        if stem == "custom_objects":
            group = "custom"
        else:
            match = re.match(r"^(?P<name>[a-z_]+?)_v\d", stem)
            if not match:
                continue
            camel = "".join(part.capitalize() for part in match.group("name").split("_"))
            group = "" if camel == "Core" else _GROUP_OF_CLASS.get(camel)
            if group is None:
                continue
        for method in re.findall(r"^    def ([a-z_]+)\(", path.read_text(), flags=re.M):
            if _METHOD.match(method) and not method.endswith("_with_http_info"):
                methods.setdefault(method, set()).add(group)
    return methods


_GROUP_OF_CLASS = {
    "Apps": "apps",
    "Authentication": "authentication.k8s.io",
    "Authorization": "authorization.k8s.io",
    "Batch": "batch",
    "Coordination": "coordination.k8s.io",
    "Networking": "networking.k8s.io",
    "RbacAuthorization": "rbac.authorization.k8s.io",
    "Storage": "storage.k8s.io",
    "Policy": "policy",
    "Events": "events.k8s.io",
    "AdmissionregistrationV1": "admissionregistration.k8s.io",
    "Admissionregistration": "admissionregistration.k8s.io",
    "Autoscaling": "autoscaling",
    "Certificates": "certificates.k8s.io",
    "Discovery": "discovery.k8s.io",
    "Node": "node.k8s.io",
    "Scheduling": "scheduling.k8s.io",
}
METHOD_GROUPS = _api_groups()


def _plural(snake: str) -> str:
    word = snake.replace("_", "")
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("y"):
        return word[:-1] + "ies"
    if word.endswith(("s", "x")):
        return word + "es"
    return word + "s"


def _constants(files: list[Path]) -> dict[str, object]:
    """Module-level NAME = "literal" assignments of a package (names that clash are dropped)."""
    found: dict[str, object] = {}
    clashes = set()
    for path in files:
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.Assign):
                continue
            pairs = []
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value, ast.Constant):
                    pairs.append((target.id, node.value.value))
                elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs += [
                        (t.id, v.value)
                        for t, v in zip(target.elts, node.value.elts, strict=False)
                        if isinstance(t, ast.Name) and isinstance(v, ast.Constant)
                    ]
            for name, value in pairs:
                if name in found and found[name] != value:
                    clashes.add(name)
                found[name] = value
    return {k: v for k, v in found.items() if k not in clashes}


def _value(node: ast.AST | None, constants: dict[str, object]) -> object:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    if isinstance(node, ast.Attribute) and node.attr in constants:
        return constants[node.attr]
    raise LookupError(f"cannot resolve {ast.unparse(node) if node else 'a missing argument'} to a literal")


def _custom_permissions(method: str, verb: str, args: list[ast.AST], keywords: dict[str, ast.AST], constants):
    shape = "namespaced" if "_namespaced_" in method else "cluster"
    params = dict(zip(_CUSTOM_ARGS[shape], args, strict=False))
    params.update({k: v for k, v in keywords.items() if k in _CUSTOM_ARGS[shape]})
    group = _value(params.get("group"), constants)
    plural = _value(params.get("plural"), constants)
    return str(group), str(plural)


# KFP's API server authorizes a caller with a SubjectAccessReview on these resources (group
# pipelines.kubeflow.org): a path of its API in the code needs the permission of that resource.
_KFP_PATH = re.compile(r"^/apis/v[12]beta1/(?P<resource>runs|experiments|pipelines|recurringruns|jobs)(?P<one>/)?")


def _kfp_permissions(tree: ast.AST) -> set[Permission]:
    found = set()
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            text = str(node.values[0].value) + ("{}" if len(node.values) > 1 else "")
        match = _KFP_PATH.match(text or "")
        if match:
            verb = "get" if match.group("one") else "list"
            found.add(Permission("pipelines.kubeflow.org", match.group("resource"), verb))
    return found


def permissions(source: Path) -> tuple[set[Permission], list[str]]:
    """The permissions the code under `source` needs, and the calls it could not resolve."""
    files = [p for p in sorted(source.rglob("*.py")) if "tests" not in p.parts]
    constants = _constants(files)
    needed: set[Permission] = set()
    unresolved: list[str] = []
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        needed |= _kfp_permissions(tree)
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr in METHOD_GROUPS):
                continue
            method = node.attr
            match = _METHOD.match(method)
            assert match
            verb = VERBS[match.group("verb")]
            parent = parents.get(node)
            called = isinstance(parent, ast.Call) and parent.func is node
            if called:
                args, keywords = list(parent.args), {k.arg: k.value for k in parent.keywords if k.arg}
                watched = isinstance(keywords.get("watch"), ast.Constant) and keywords["watch"].value is True
                verbs = {"watch"} if watched else {verb}
            elif isinstance(parent, ast.Call):  # handed to a watch/list loop: the arguments that follow are its own
                position = parent.args.index(node) if node in parent.args else len(parent.args)
                args = list(parent.args[position + 1 :])
                keywords = {k.arg: k.value for k in parent.keywords if k.arg}
                verbs = {"list", "watch"} if verb == "list" else {verb}
            else:
                args, keywords, verbs = [], {}, ({"list", "watch"} if verb == "list" else {verb})
            groups = METHOD_GROUPS[method]
            where = f"{path.relative_to(source)}:{node.lineno} {method}"
            if groups == {"custom"}:
                try:
                    group, resource = _custom_permissions(method, verb, args, keywords, constants)
                except LookupError as error:
                    unresolved.append(f"{where}: {error}")
                    continue
            else:
                if len(groups) > 1:
                    unresolved.append(f"{where}: defined by several API groups {sorted(groups)}")
                    continue
                (group,) = groups
                resource = _plural(match.group("resource"))
                if match.group("sub"):
                    resource += "/" + match.group("sub")[1:]
            needed |= {Permission(group, resource, v) for v in verbs}
    return needed, unresolved
