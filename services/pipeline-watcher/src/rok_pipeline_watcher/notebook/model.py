"""A notebook as a pipeline: what :func:`~.parser.parse_notebook` makes of a Kale-tagged notebook.

Everything here is plain, frozen data: the local runner runs it (``rok run NOTEBOOK.ipynb``) and the compiler
turns it into a KFP pipeline (``rok compile``), and neither has to read the notebook again.

Cell indices are 0-based positions in the notebook's ``cells`` list (markdown cells included), so that an
error, a compiled step or an executed step's notebook can point back at the cell a person sees.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rokcommon.errors import PermanentError

ParameterType = Literal["int", "float", "str", "bool"]
Value = int | float | str | bool

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class NotebookError(PermanentError):
    """The notebook cannot be a pipeline as it is; the message names the notebook, the cell and the problem."""

    exit_code = 2


@dataclass(frozen=True)
class NotebookVolume:
    """A volume of the notebook server, from the ``kubeflow_notebook`` metadata (Kale's volume fields)."""

    name: str  # the PVC's name (a DNS label); locally also the volume's name in the run
    mount_point: str  # where the notebook server mounts it, e.g. /home/jovyan
    type: str = "pvc"  # Kale's: pvc (an existing PVC), new_pvc, pv, clone
    size: int | None = None
    size_type: str | None = None  # Gi, Mi, ...
    snapshot: bool = False
    snapshot_name: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    workspace: bool = False  # the notebook's working directory: steps run in it, marshaled data live in it


@dataclass(frozen=True)
class Parameter:
    """A pipeline parameter: one assignment of a ``pipeline-parameters`` cell, typed by its default."""

    name: str
    type: ParameterType
    default: Value

    def parse(self, text: str) -> Value:
        """``text`` (from ``-p NAME=VALUE``) as a value of this parameter's type; ValueError says why not."""
        if self.type == "bool":
            word = text.strip().lower()
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
            raise ValueError(f"parameter {self.name} is a bool: give true or false, not {text!r}")
        if self.type == "int":
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"parameter {self.name} is an int: {text!r} is not one") from None
        if self.type == "float":
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"parameter {self.name} is a float: {text!r} is not a number") from None
        return text


@dataclass(frozen=True)
class Metric:
    """A pipeline metric: a variable named in the ``pipeline-metrics`` cell, reported by the step that last
    assigns it (in the steps' order). Its name is the variable's with ``_`` written ``-``, as Kale names it."""

    name: str
    variable: str
    step: str


@dataclass(frozen=True)
class Marshaled:
    """A variable a step loads: saved by ``step``, the nearest step before it that assigns it."""

    variable: str
    step: str


@dataclass(frozen=True)
class NotebookStep:
    """A ``step:NAME`` cell and the cells that belong to it (untagged ones after it, later cells of the same
    name). ``source`` is the step's own code, without the ``imports`` and ``functions`` cells."""

    name: str  # as tagged: Kale's step names are [_a-z][_a-z0-9]*
    cells: tuple[int, ...]
    cell_sources: tuple[str, ...]
    prev: tuple[str, ...] = ()
    ins: tuple[Marshaled, ...] = ()  # variables it loads, each from the step that saved it
    outs: tuple[str, ...] = ()  # variables it saves for later steps
    annotations: Mapping[str, str] = field(default_factory=dict)  # Kale's annotation: / label: / limit: tags
    labels: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return "\n".join(self.cell_sources)

    @property
    def task_name(self) -> str:
        """The step's name as a DNS label (``load_data`` → ``load-data``), as KFP names the step's task."""
        return task_name(self.name)


def task_name(step: str) -> str:
    return re.sub(r"-+", "-", step.replace("_", "-")).strip("-")


@dataclass(frozen=True)
class NotebookPipeline:
    path: Path  # the notebook file, absolute
    name: str  # pipeline_name, or the notebook's file name
    experiment: str  # experiment_name, or the pipeline's name
    description: str
    docker_image: str  # "" when the notebook names none
    volumes: tuple[NotebookVolume, ...]  # the workspace first; empty when the metadata lists none
    parameters: tuple[Parameter, ...]
    metrics: tuple[Metric, ...]
    imports: str  # the code of the imports cells, prepended to every step
    functions: str  # the code of the functions cells, prepended to every step after the imports
    steps: tuple[NotebookStep, ...]  # in the notebook's order (of each step's first cell)
    prelude_cells: tuple[int, ...] = ()  # the imports and functions cells, in the notebook's order
    imports_cells: tuple[int, ...] = ()
    functions_cells: tuple[int, ...] = ()
    parameters_cells: tuple[int, ...] = ()
    metrics_cells: tuple[int, ...] = ()

    def step(self, name: str) -> NotebookStep:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def order(self) -> list[NotebookStep]:
        """The steps in an order that respects ``prev`` (ties keep the notebook's order)."""
        done: list[NotebookStep] = []
        names: set[str] = set()
        left = list(self.steps)
        while left:
            ready = [s for s in left if set(s.prev) <= names]
            if not ready:  # the parser refuses cycles
                raise ValueError(f"the steps {', '.join(s.name for s in left)} wait for each other")
            done.extend(ready)
            names.update(s.name for s in ready)
            left = [s for s in left if s not in ready]
        return done

    def parameter(self, name: str) -> Parameter:
        for parameter in self.parameters:
            if parameter.name == name:
                return parameter
        raise KeyError(name)

    def parameter_values(self, overrides: Mapping[str, str] | None = None) -> dict[str, Value]:
        """Every parameter's value: its default, or the override's text typed as the default is. A name that
        is no parameter, or a value of the wrong type, is a :class:`NotebookError`."""
        values: dict[str, Value] = {p.name: p.default for p in self.parameters}
        for name, text in (overrides or {}).items():
            if name not in values:
                known = ", ".join(values) or "none"
                raise NotebookError(f"{self.path}: no pipeline parameter is called {name!r} (the parameters: {known})")
            try:
                values[name] = self.parameter(name).parse(text)
            except ValueError as error:
                raise NotebookError(f"{self.path}: {error}") from None
        return values

    @property
    def workspace(self) -> NotebookVolume | None:
        return self.volumes[0] if self.volumes else None
