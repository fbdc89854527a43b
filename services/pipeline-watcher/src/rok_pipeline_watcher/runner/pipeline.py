"""The local pipeline file (documented in docs/pipelines.md)::

pipeline: churn-model          # the pipeline's name
experiment: churn              # the experiment (a bucket in the registry)
volumes:                       # the notebook's volumes: directories, the workspace first
  - name: workspace
    path: ./notebook/home      # relative to this file
  - name: data
    path: ./notebook/data
steps:
  - name: prepare
    run: python prepare.py     # a shell command, run in the workspace
  - name: train
    run: python train.py
    after: [prepare]
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from rokcommon.errors import PermanentError

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class PipelineError(PermanentError):
    """The pipeline file is wrong; the message says where and how."""

    exit_code = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Volume(_Strict):
    name: str
    path: Path

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"volume name {value!r} must be lower-case letters, digits and '-'")
        return value


class Step(_Strict):
    name: str
    run: str = Field(min_length=1)
    after: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"step name {value!r} must be lower-case letters, digits and '-'")
        return value

    @field_validator("after", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value


class Pipeline(_Strict):
    pipeline: str = Field(min_length=1)
    experiment: str = Field(min_length=1)
    volumes: tuple[Volume, ...] = Field(min_length=1)
    steps: tuple[Step, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Pipeline:
        for kind, names in (("volume", [v.name for v in self.volumes]), ("step", [s.name for s in self.steps])):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{kind} names must be unique: {', '.join(twice)} appear more than once")
        known = {s.name for s in self.steps}
        for step in self.steps:
            for dependency in step.after:
                if dependency not in known:
                    raise ValueError(f"step {step.name!r} runs after {dependency!r}, which is not a step")
        self.order()  # raises on a cycle
        return self

    def order(self) -> list[Step]:
        """The steps in an order that respects ``after`` (ties keep the file's order)."""
        done: list[Step] = []
        left = list(self.steps)
        while left:
            ready = [s for s in left if all(d in {x.name for x in done} for d in s.after)]
            if not ready:
                raise ValueError(f"the steps {', '.join(s.name for s in left)} wait for each other (a cycle)")
            done.extend(ready)
            left = [s for s in left if s not in ready]
        return done

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


def load(path: Path) -> Pipeline:
    """Read a pipeline file; volume paths are made absolute relative to the file's directory."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise PipelineError(f"cannot read pipeline file {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise PipelineError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise PipelineError(f"{path} must be a mapping with pipeline, experiment, volumes and steps")
    for volume in raw.get("volumes") or ():
        if isinstance(volume, dict) and "path" in volume:
            volume["path"] = (path.parent / str(volume["path"])).resolve()
    try:
        pipeline = Pipeline.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors(include_url=False)
        )
        raise PipelineError(f"{path}: {problems}") from error
    for volume in pipeline.volumes:
        if not volume.path.is_dir():
            raise PipelineError(f"{path}: volume {volume.name!r} is {volume.path}, which is not a directory")
    return pipeline


def check_roots(pipeline: Pipeline, roots: Sequence[Path], source: Path) -> None:
    """Every volume lies in one of ``roots``, the directories the snapshotter reads local volumes in: a volume
    elsewhere would be refused by it, and the run would wait for a snapshot that never comes."""
    for volume in pipeline.volumes:
        real = Path(os.path.realpath(volume.path))
        if not any(real.is_relative_to(os.path.realpath(root)) for root in roots):
            raise PipelineError(
                f"{source}: volume {volume.name!r} is {volume.path}, outside the directories the snapshotter reads "
                f"(ROK_VOLUME_ROOTS: {os.pathsep.join(map(str, roots))}); add its directory to ROK_VOLUME_ROOTS, "
                "for `rok up` as well"
            )
