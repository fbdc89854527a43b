"""Reading a Kale-tagged notebook into a :class:`~.model.NotebookPipeline` (the tags: docs/notebooks.md).

A code cell's ``tags`` (its metadata) say what it is:

* ``imports``, ``functions``: code run at the start of every step, imports first;
* ``pipeline-parameters``: assignments of constants, the run's parameters;
* ``pipeline-metrics``: ``print(name)`` lines (or bare names), the run's metrics; only at the notebook's end;
* ``step:NAME`` (or the older ``block:NAME``): a step starts, or goes on if NAME was seen before;
  ``prev:NAME``, any number of them, the steps it runs after;
* ``skip``: left out;
* ``annotation:KEY:VALUE``, ``label:KEY:VALUE``, ``limit:KEY:VALUE``: the step's pod, in a cluster.

An untagged cell belongs to what came before it (a step, the imports, ...); untagged cells before the first
tagged one are left out. Markdown and raw cells are never run. Everything wrong is found here, before anything
runs, and said as one :class:`~.model.NotebookError` naming the cell.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rok_pipeline_watcher.notebook.model import (
    Marshaled,
    Metric,
    NotebookError,
    NotebookPipeline,
    NotebookStep,
    NotebookVolume,
    Parameter,
    ParameterType,
    task_name,
)
from rok_pipeline_watcher.notebook.names import Names, analyse, has_code, python_source

METADATA_KEY = "kubeflow_notebook"

_SPECIAL = ("imports", "functions", "pipeline-parameters", "pipeline-metrics", "skip")
_STEP_NAME = r"[_a-z][_a-z0-9]*"
_STEP = re.compile(rf"^(?:step|block):({_STEP_NAME})?$")
_PREV = re.compile(rf"^prev:({_STEP_NAME})$")
_K8S_KEY = r"[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?(?:/[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?)?"
_POD = re.compile(rf"^(annotation|label):({_K8S_KEY}):(.*)$")
_LIMIT = re.compile(r"^limit:([_a-z-./]+):([_a-zA-Z0-9.]+)$")
_DNS = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_METRIC = re.compile(r"^\s*(?:print\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)|([A-Za-z_][A-Za-z0-9_]*))\s*(?:#.*)?$")


@dataclass
class _Tags:
    kind: str | None = None  # one of _SPECIAL, "step", or None (untagged)
    step: str | None = None
    prev: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)


@dataclass
class _Step:
    name: str
    first_cell: int
    cells: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    prev: dict[str, int] = field(default_factory=dict)  # prev name → the cell that said it
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)


class _Notebook:
    """One parse: the file's name and cells, for errors that say where."""

    def __init__(self, path: Path, cells: list[dict[str, Any]]) -> None:
        self.path, self.cells = path, cells

    def error(self, index: int | None, problem: str) -> NotebookError:
        if index is None:
            return NotebookError(f"{self.path}: {problem}")
        tags = self.cells[index].get("metadata", {}).get("tags") or []
        tagged = f" [{', '.join(map(str, tags))}]" if tags else ""
        return NotebookError(f"{self.path}, cell {index + 1}{tagged}: {problem}")


def parse_notebook(path: Path) -> NotebookPipeline:
    """Read the notebook at ``path``: its ``kubeflow_notebook`` metadata, its tagged cells, the variables that
    flow between its steps. Raises :class:`NotebookError` for anything that would keep it from running."""
    path = path.absolute()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise NotebookError(f"cannot read notebook {path}: {error.strerror}") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise NotebookError(f"{path} is not a notebook (.ipynb is JSON): {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("cells"), list):
        raise NotebookError(f"{path} is not a notebook: it has no list of cells")
    if document.get("nbformat", 4) < 4:
        raise NotebookError(f"{path} is a notebook of format {document.get('nbformat')}; save it as format 4")
    notebook = _Notebook(path, document["cells"])
    metadata = (document.get("metadata") or {}).get(METADATA_KEY) or {}
    if not isinstance(metadata, dict):
        raise notebook.error(None, f"the notebook's {METADATA_KEY} metadata must be a mapping")

    blocks: dict[str, list[tuple[int, str]]] = {kind: [] for kind in _SPECIAL}
    steps: dict[str, _Step] = {}
    current: str | None = None  # a special kind or "step:NAME": where untagged cells go
    for index, cell in enumerate(notebook.cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = _source(cell)
        tags = _tags(notebook, index, cell)
        if tags.kind == "skip":
            continue
        if tags.kind is None:
            if current is None:
                continue  # before the first tagged cell: not part of the pipeline, as in Kale
            target = current
        elif tags.kind == "step":
            if current == "pipeline-metrics":
                raise notebook.error(
                    index, "a step after the pipeline-metrics cell: the metrics cell must come after every step"
                )
            assert tags.step is not None
            target = f"step:{tags.step}"
            step = steps.setdefault(tags.step, _Step(tags.step, first_cell=index))
            for prev in tags.prev:
                step.prev.setdefault(prev, index)
            step.annotations.update(tags.annotations)
            step.labels.update(tags.labels)
            step.limits.update(tags.limits)
        else:
            target = tags.kind
        current = target
        if target.startswith("step:"):
            step = steps[target.removeprefix("step:")]
            step.cells.append(index)
            step.sources.append(source)
        else:
            blocks[target].append((index, source))

    if not steps:
        raise notebook.error(None, "no cell is tagged step:NAME, so there is no step to run")
    _check_steps(notebook, steps)
    parameters = _parameters(notebook, blocks["pipeline-parameters"])
    imports = "\n".join(s for _, s in blocks["imports"])
    functions = "\n".join(s for _, s in blocks["functions"])
    for index, source in blocks["imports"] + blocks["functions"]:
        _syntax(notebook, index, source)
    ordered = _order(notebook, steps)
    names = {}
    for step in ordered:
        for index, source in zip(step.cells, step.sources, strict=True):
            _syntax(notebook, index, source)
        names[step.name] = analyse(step_source(step.sources))
    everywhere = analyse(imports + "\n" + functions).defines | {p.name for p in parameters}
    ins, outs = _marshaling(ordered, names, everywhere)
    metrics = _metrics(notebook, blocks["pipeline-metrics"], ordered, names)

    name = _text(notebook, metadata, "pipeline_name") or _default_name(path)
    experiment = _text(notebook, metadata, "experiment_name")
    if not experiment and isinstance(metadata.get("experiment"), dict):
        experiment = str(metadata["experiment"].get("name") or "")
    return NotebookPipeline(
        path=path,
        name=name,
        experiment=experiment or name,
        description=_text(notebook, metadata, "pipeline_description"),
        docker_image=_text(notebook, metadata, "docker_image"),
        volumes=_volumes(notebook, metadata.get("volumes")),
        parameters=parameters,
        metrics=metrics,
        imports=imports,
        functions=functions,
        steps=tuple(
            NotebookStep(
                name=s.name,
                cells=tuple(s.cells),
                cell_sources=tuple(s.sources),
                prev=tuple(s.prev),
                ins=tuple(ins[s.name]),
                outs=tuple(sorted(outs[s.name])),
                annotations=dict(s.annotations),
                labels=dict(s.labels),
                limits=dict(s.limits),
            )
            for s in steps.values()
        ),
        prelude_cells=tuple(sorted(i for kind in ("imports", "functions") for i, _ in blocks[kind])),
        imports_cells=tuple(i for i, _ in blocks["imports"]),
        functions_cells=tuple(i for i, _ in blocks["functions"]),
        parameters_cells=tuple(i for i, _ in blocks["pipeline-parameters"]),
        metrics_cells=tuple(i for i, _ in blocks["pipeline-metrics"]),
    )


def step_source(sources: list[str] | tuple[str, ...]) -> str:
    return "\n".join(sources)


def _source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _tags(notebook: _Notebook, index: int, cell: dict[str, Any]) -> _Tags:
    raw = (cell.get("metadata") or {}).get("tags") or []
    if not isinstance(raw, list):
        raise notebook.error(index, "the cell's tags must be a list of strings")
    tags = _Tags()
    kinds: list[str] = []
    for tag in raw:
        if not isinstance(tag, str):
            raise notebook.error(index, f"the tag {tag!r} is not a string")
        if tag in _SPECIAL:
            kinds.append(tag)
        elif match := _STEP.match(tag):
            if match.group(1) is None:
                continue  # an empty `step:` or `block:` (left by the Kale editor) names nothing
            kinds.append(f"step:{match.group(1)}")
        elif match := _PREV.match(tag):
            if match.group(1) not in tags.prev:
                tags.prev.append(match.group(1))
        elif match := _POD.match(tag):
            (tags.annotations if match.group(1) == "annotation" else tags.labels)[match.group(2)] = match.group(3)
        elif match := _LIMIT.match(tag):
            tags.limits[match.group(1)] = match.group(2)
        elif tag.startswith(("step:", "block:", "prev:")):
            raise notebook.error(
                index, f"{tag!r}: a step's name is lower-case letters, digits and '_', starting with a letter or '_'"
            )
        else:
            raise notebook.error(
                index,
                f"unknown tag {tag!r}: the tags are imports, functions, pipeline-parameters, pipeline-metrics, "
                "skip, step:NAME, prev:NAME, annotation:KEY:VALUE, label:KEY:VALUE, limit:KEY:VALUE",
            )
    distinct = list(dict.fromkeys(kinds))
    if len(distinct) > 1:
        raise notebook.error(index, f"contradictory tags: a cell is one of {', '.join(distinct)}, not several")
    pod = tags.annotations or tags.labels or tags.limits
    if distinct and distinct[0].startswith("step:"):
        tags.kind, tags.step = "step", distinct[0].removeprefix("step:")
        if tags.step in tags.prev:
            raise notebook.error(index, f"step {tags.step} cannot run after itself (prev:{tags.step})")
    elif distinct:
        tags.kind = distinct[0]
        if tags.prev or pod:
            extra = "prev:" if tags.prev else "annotation:, label: or limit:"
            raise notebook.error(index, f"contradictory tags: a {tags.kind} cell cannot have {extra} tags")
    elif tags.prev or pod:
        extra = "prev:" if tags.prev else "annotation:, label: or limit:"
        raise notebook.error(index, f"{extra} tags need a step:NAME tag on the same cell")
    return tags


def _check_steps(notebook: _Notebook, steps: dict[str, _Step]) -> None:
    by_task: dict[str, str] = {}
    for step in steps.values():
        for prev, index in step.prev.items():
            if prev not in steps:
                known = ", ".join(steps)
                raise notebook.error(index, f"prev:{prev} names no step (the steps: {known})")
        if not any(has_code(s) for s in step.sources):
            raise notebook.error(step.first_cell, f"step {step.name} has no code")
        task = task_name(step.name)
        if not _DNS.match(task):
            raise notebook.error(step.first_cell, f"step {step.name}: {task!r} is not a valid task name")
        if task in by_task:
            raise notebook.error(
                step.first_cell, f"steps {by_task[task]} and {step.name} would both be the task {task!r}"
            )
        by_task[task] = step.name


def _order(notebook: _Notebook, steps: dict[str, _Step]) -> list[_Step]:
    """Topological, ties in the notebook's order; a cycle is said at the cell whose prev: closes it."""
    done: list[_Step] = []
    names: set[str] = set()
    left = list(steps.values())
    while left:
        ready = [s for s in left if set(s.prev) <= names]
        if not ready:
            cycle = _cycle(steps, {s.name for s in left})
            last, first = cycle[-2], cycle[-1]
            raise notebook.error(
                steps[last].prev[first],
                f"the steps wait for each other in a cycle: {' → '.join(reversed(cycle))}",
            )
        done.extend(ready)
        names.update(s.name for s in ready)
        left = [s for s in left if s not in ready]
    return done


def _cycle(steps: dict[str, _Step], left: set[str]) -> list[str]:
    """A cycle among ``left``: [a, b, ..., a], each one's prev: naming the next."""
    start = min(left, key=lambda n: steps[n].first_cell)
    path = [start]
    while True:
        nxt = next(p for p in steps[path[-1]].prev if p in left)
        if nxt in path:
            return [*path[path.index(nxt) :], nxt]
        path.append(nxt)


def _syntax(notebook: _Notebook, index: int, source: str) -> None:
    try:
        ast.parse(python_source(source))
    except SyntaxError as error:
        raise notebook.error(index, f"line {error.lineno}: {error.msg}") from None


def _parameters(notebook: _Notebook, cells: list[tuple[int, str]]) -> tuple[Parameter, ...]:
    found: dict[str, Parameter] = {}
    for index, source in cells:
        _syntax(notebook, index, source)
        for statement in ast.parse(python_source(source)).body:
            if isinstance(statement, ast.Pass):
                continue
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target, value = statement.targets[0], statement.value
            elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                target, value = statement.target, statement.value
            else:
                raise notebook.error(
                    index, f"line {statement.lineno}: a pipeline-parameters cell holds only `NAME = constant` lines"
                )
            if not isinstance(target, ast.Name):
                raise notebook.error(index, f"line {statement.lineno}: assign one name per line (`NAME = constant`)")
            try:
                default = ast.literal_eval(value)
            except ValueError:
                default = None
            kind: ParameterType
            if isinstance(default, bool):
                kind = "bool"
            elif isinstance(default, int):
                kind = "int"
            elif isinstance(default, float):
                kind = "float"
            elif isinstance(default, str):
                kind = "str"
            else:
                raise notebook.error(
                    index,
                    f"line {statement.lineno}: parameter {target.id} must be an int, float, str or bool constant, "
                    f"not {ast.unparse(value)}",
                )
            found[target.id] = Parameter(target.id, kind, default)
    return tuple(found.values())


def _ancestors(step: _Step, steps: dict[str, _Step]) -> set[str]:
    seen: set[str] = set()
    pending = list(step.prev)
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(steps[name].prev)
    return seen


def _marshaling(
    ordered: list[_Step], names: dict[str, Names], everywhere: frozenset[str] | set[str]
) -> tuple[dict[str, list[Marshaled]], dict[str, set[str]]]:
    """For each step, the variables it loads (each from the nearest step before it, in the steps' order, that
    defines it and that it runs after) and those it saves. What the imports and functions cells define, and
    the parameters, are in every step already and never marshaled."""
    steps = {s.name: s for s in ordered}
    position = {s.name: i for i, s in enumerate(ordered)}
    ins: dict[str, list[Marshaled]] = {s.name: [] for s in ordered}
    outs: dict[str, set[str]] = {s.name: set() for s in ordered}
    for step in ordered:
        before = sorted(_ancestors(step, steps), key=position.__getitem__, reverse=True)
        for variable in sorted(names[step.name].needs - set(everywhere)):
            source = next((a for a in before if variable in names[a].defines), None)
            if source is not None:
                ins[step.name].append(Marshaled(variable, source))
                outs[source].add(variable)
    return ins, outs


def _metrics(
    notebook: _Notebook, cells: list[tuple[int, str]], ordered: list[_Step], names: dict[str, Names]
) -> tuple[Metric, ...]:
    found: dict[str, Metric] = {}
    for index, source in cells:
        for number, line in enumerate(source.splitlines(), start=1):
            if not line.strip() or line.strip().startswith("#"):
                continue
            match = _METRIC.match(line)
            if match is None:
                raise notebook.error(
                    index,
                    f"line {number}: a pipeline-metrics cell holds only `print(name)` lines, not {line.strip()!r}",
                )
            variable = match.group(1) or match.group(2)
            step = next((s.name for s in reversed(ordered) if variable in names[s.name].defines), None)
            if step is None:
                raise notebook.error(index, f"line {number}: metric {variable} is assigned by no step")
            found[variable] = Metric(name=variable.replace("_", "-"), variable=variable, step=step)
    return tuple(found.values())


def _text(notebook: _Notebook, metadata: dict[str, Any], key: str) -> str:
    value = metadata.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise notebook.error(None, f"{METADATA_KEY}.{key} must be a string, not {value!r}")
    return value.strip()


def _default_name(path: Path) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", path.stem.lower()).strip("-") or "notebook"


def _volumes(notebook: _Notebook, raw: object) -> tuple[NotebookVolume, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise notebook.error(None, f"{METADATA_KEY}.volumes must be a list")
    volumes: list[NotebookVolume] = []
    for number, entry in enumerate(raw, start=1):
        where = f"{METADATA_KEY}.volumes[{number}]"
        if not isinstance(entry, dict):
            raise notebook.error(None, f"{where} must be a mapping with name and mount_point")
        name, mount = entry.get("name"), entry.get("mount_point")
        if not isinstance(name, str) or not _DNS.match(name):
            raise notebook.error(None, f"{where}: name {name!r} must be a DNS label (a-z, 0-9, '-')")
        if not isinstance(mount, str) or not mount.startswith("/"):
            raise notebook.error(None, f"{where} ({name}): mount_point {mount!r} must be an absolute path")
        annotations = entry.get("annotations") or []
        if isinstance(annotations, list):  # the Kale editor writes [{key, value}]
            annotations = {a["key"]: a["value"] for a in annotations if isinstance(a, dict) and a.get("key")}
        size = entry.get("size")
        volumes.append(
            NotebookVolume(
                name=name,
                mount_point=mount.rstrip("/") or "/",
                type=str(entry.get("type") or "pvc"),
                size=int(size) if isinstance(size, int | float) or (isinstance(size, str) and size.isdigit()) else None,
                size_type=entry.get("size_type") or None,
                snapshot=bool(entry.get("snapshot", False)),
                snapshot_name=entry.get("snapshot_name") or None,
                annotations={str(k): str(v) for k, v in dict(annotations).items()},
            )
        )
    names = [v.name for v in volumes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise notebook.error(None, f"{METADATA_KEY}.volumes: {', '.join(twice)} listed more than once")
    mounts = [v.mount_point for v in volumes]
    twice = sorted({m for m in mounts if mounts.count(m) > 1})
    if twice:
        raise notebook.error(None, f"{METADATA_KEY}.volumes: more than one volume mounted at {', '.join(twice)}")
    # The workspace: the volume mounted at a home directory (/home/<user>), as the notebook server's working
    # directory is; else the first listed. It comes first, as the Jupyter web app expects.
    home = next((v for v in volumes if re.fullmatch(r"/home/[^/]+", v.mount_point)), volumes[0] if volumes else None)
    ordered = sorted(volumes, key=lambda v: v is not home)
    return tuple(NotebookVolume(**{**v.__dict__, "workspace": True}) if v is home else v for v in ordered)
