"""Kale-tagged notebooks as pipelines.

* :mod:`.model` is the notebook as a pipeline (frozen data), :mod:`.parser` reads a notebook into it and
  :mod:`.names` finds the variables that flow between its steps;
"""

from rok_pipeline_watcher.notebook.model import (
    Marshaled,
    Metric,
    NotebookError,
    NotebookPipeline,
    NotebookStep,
    NotebookVolume,
    Parameter,
)
from rok_pipeline_watcher.notebook.parser import parse_notebook

__all__ = [
    "Marshaled",
    "Metric",
    "NotebookError",
    "NotebookPipeline",
    "NotebookStep",
    "NotebookVolume",
    "Parameter",
    "parse_notebook",
]
