"""What ``rok run`` reads: rok's own pipeline file, or a KFP-compiled one with its PVCs mapped to directories."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from rok_pipeline_watcher.kfp.spec import arguments, is_kfp_pipeline, load_kfp, local_pipeline
from rok_pipeline_watcher.runner.pipeline import Pipeline, PipelineError


def pairs(values: Sequence[str], option: str) -> dict[str, str]:
    """``NAME=VALUE`` options as a mapping; the same name twice, or no ``=``, is an error naming it."""
    found: dict[str, str] = {}
    for value in values:
        name, sign, rest = value.partition("=")
        if not sign or not name:
            raise PipelineError(f"{option} {value!r}: expected NAME=VALUE")
        if name in found:
            raise PipelineError(f"{option} {name}: given twice")
        found[name] = rest
    return found


def load_any(
    path: Path, *, volumes: Sequence[str], parameters: Sequence[str], loader: Callable[[Path], Pipeline]
) -> Pipeline:
    """The pipeline in ``path``, read with ``loader`` unless the KFP SDK compiled it."""
    if not is_kfp_pipeline(path):
        if volumes or parameters:
            raise PipelineError(
                f"{path}: -p and --volume are for notebooks and pipelines compiled by the KFP SDK; this file is rok's "
                "own pipeline file, whose volumes are in the file"
            )
        return loader(path)
    pipeline = load_kfp(path)
    directories = {name: Path(directory).expanduser() for name, directory in pairs(volumes, "--volume").items()}
    return local_pipeline(pipeline, directories, arguments(pipeline, pairs(parameters, "-p")))
