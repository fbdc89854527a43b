"""One notebook step, run in a Python process of its own: ``python executor.py SPEC.json`` (or ``-`` for stdin).

This file imports nothing but the standard library and cloudpickle, so that any interpreter that has cloudpickle
can run it as a script (a step's image, a virtual environment with the notebook's libraries).

The spec (JSON) says what to run::

    {"step": "train", "notebook": "churn.ipynb",
     "marshal_dir": "/…/workspace/.rok/marshal/<run>",   # the hidden folder of the run, in the workspace
     "parameters": {"lr": 0.1},                          # the run's values, assigned before anything else
     "cells": [{"index": 2, "role": "imports", "source": "import math"},
               {"index": 5, "role": "step", "source": "model = fit(data, lr)"}],
     "loads": [{"variable": "data", "step": "load"}],    # loaded before the step's first cell
     "saves": ["model"],                                 # saved after its last one
     "metrics": {"accuracy": "acc"},                     # metric name → variable, recorded after the last cell
     "metadata": {"kernelspec": {…}}}                    # the notebook's metadata, for the executed notebook

In the marshal folder it writes ``<step>/<variable>.pkl`` (cloudpickle), ``<step>/metrics.json``, and
``<step>.ipynb``: the cells it ran with their outputs (streams, the last expression's value, errors), which is
written whatever happened. The exit code is 0 when every cell ran and every variable was saved, 1 when a cell
raised, 2 when the spec is wrong and 3 when a variable could not be loaded or saved; the reason is also written
to ``<step>/failure.txt``, one line.

The cells share one namespace, that of a fresh ``__main__`` module, as in a notebook's kernel; classes and
functions defined there are pickled by value, so that a later step gets them even where it does not define them.
IPython syntax (``%magic``, ``!command``) needs IPython in this interpreter.
"""

from __future__ import annotations

import ast
import base64
import json
import math
import sys
import traceback
import types
from pathlib import Path
from typing import Any, TextIO

_RICH = (
    ("text/html", "_repr_html_"),
    ("text/markdown", "_repr_markdown_"),
    ("image/svg+xml", "_repr_svg_"),
    ("image/png", "_repr_png_"),
    ("application/json", "_repr_json_"),
)


class StepFailure(Exception):
    """A step cannot go on; ``str()`` is the one line that says why."""

    exit_code = 3


class _Outputs:
    """The outputs of the cell that is running, in nbformat's shapes."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def stream(self, name: str, text: str) -> None:
        if self.items and self.items[-1].get("output_type") == "stream" and self.items[-1]["name"] == name:
            self.items[-1]["text"] += text
        else:
            self.items.append({"output_type": "stream", "name": name, "text": text})

    def data(self, value: object, *, result: int | None) -> None:
        bundle = _mime_bundle(value)
        if result is None:
            self.items.append({"output_type": "display_data", "data": bundle, "metadata": {}})
        else:
            self.items.append(
                {"output_type": "execute_result", "execution_count": result, "data": bundle, "metadata": {}}
            )


class _Tee:
    """A stream that writes through to the process's own and records what it wrote in the cell's outputs."""

    def __init__(self, name: str, real: TextIO, outputs: list[_Outputs]) -> None:
        self._name, self._real, self._outputs = name, real, outputs

    def write(self, text: str) -> int:
        if self._outputs:
            self._outputs[-1].stream(self._name, text)
        return self._real.write(text)

    def flush(self) -> None:
        self._real.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _mime_bundle(value: object) -> dict[str, Any]:
    bundle: dict[str, Any] = {"text/plain": repr(value)}
    for mime, method in _RICH:
        render = getattr(value, method, None)
        if not callable(render):
            continue
        try:
            rendered = render()
        except Exception:  # a broken rich display is no reason to fail a step; text/plain stays
            continue
        if rendered is None:
            continue
        if isinstance(rendered, tuple):
            rendered = rendered[0]
        if isinstance(rendered, bytes):
            rendered = base64.b64encode(rendered).decode("ascii")
        bundle[mime] = rendered
    return bundle


def _type_name(value: object) -> str:
    kind = type(value)
    return (
        kind.__qualname__ if kind.__module__ in {"builtins", "__main__"} else f"{kind.__module__}.{kind.__qualname__}"
    )


class Step:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.name: str = spec["step"]
        self.marshal = Path(spec["marshal_dir"])
        self.own = self.marshal / self.name
        self.module = types.ModuleType("__main__")
        self.namespace = self.module.__dict__
        self.namespace["__builtins__"] = __builtins__
        self.outputs: list[_Outputs] = []
        self.cells: list[dict[str, Any]] = []
        self.count = 0
        self.shell: Any = None

    def run(self) -> int:
        self.own.mkdir(parents=True, exist_ok=True)
        (self.own / "failure.txt").unlink(missing_ok=True)
        real_main = sys.modules.get("__main__")
        sys.modules["__main__"] = self.module
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout = _Tee("stdout", stdout, self.outputs)
        sys.stderr = _Tee("stderr", stderr, self.outputs)
        self.namespace["display"] = self._display
        try:
            self._parameters()
            for cell in self.spec["cells"]:
                if cell["role"] != "step":
                    self._cell(cell)
            self._load()
            for cell in self.spec["cells"]:
                if cell["role"] == "step":
                    self._cell(cell)
            self._save()
            self._metrics()
            return 0
        except _CellRaised:
            return 1
        except StepFailure as failure:
            (self.own / "failure.txt").write_text(f"{failure}\n")
            stderr.write(f"step {self.name}: {failure}\n")
            return failure.exit_code
        finally:
            sys.stdout, sys.stderr = stdout, stderr
            if real_main is not None:
                sys.modules["__main__"] = real_main
            self._write_notebook()

    # --- the parts of a step -------------------------------------------------------------------------------------

    def _parameters(self) -> None:
        values = self.spec.get("parameters") or {}
        if not values:
            return
        source = "\n".join(f"{name} = {_literal(value)}" for name, value in values.items())
        index = next((c["index"] for c in self.spec["cells"] if c["role"] == "parameters"), None)
        tags = next((c.get("tags") for c in self.spec["cells"] if c["role"] == "parameters"), None)
        cells = [c for c in self.spec["cells"] if c["role"] != "parameters"]
        self.spec["cells"] = cells
        self._cell({"index": index, "role": "parameters", "source": source, "tags": tags or ["pipeline-parameters"]})

    def _load(self) -> None:
        import cloudpickle

        for load in self.spec.get("loads") or ():
            variable, origin = load["variable"], load["step"]
            path = self.marshal / origin / f"{variable}.pkl"
            if not path.exists():
                raise StepFailure(
                    f"variable {variable} was not saved by step {origin} (it did not assign it when it ran), "
                    f"and step {self.name} uses it"
                )
            try:
                with path.open("rb") as file:
                    self.namespace[variable] = cloudpickle.load(file)
            except Exception as error:
                raise StepFailure(
                    f"cannot load variable {variable} saved by step {origin}: {type(error).__name__}: {error}"
                ) from error

    def _save(self) -> None:
        import cloudpickle

        for variable in self.spec.get("saves") or ():
            if variable not in self.namespace:
                continue  # not assigned this time (a branch not taken): a step that loads it says so
            value = self.namespace[variable]
            path = self.own / f"{variable}.pkl"
            partial = path.with_suffix(".pkl.partial")
            try:
                with partial.open("wb") as file:
                    cloudpickle.dump(value, file)
            except Exception as error:
                partial.unlink(missing_ok=True)
                raise StepFailure(
                    f"cannot save variable {variable} (a {_type_name(value)}) for the steps after it: "
                    f"{type(error).__name__}: {error}"
                ) from error
            partial.replace(path)

    def _metrics(self) -> None:
        metrics = self.spec.get("metrics") or {}
        if not metrics:
            return
        values: dict[str, float] = {}
        for name, variable in metrics.items():
            if variable not in self.namespace:
                raise StepFailure(f"metric {name}: step {self.name} did not assign {variable}")
            value = self.namespace[variable]
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise StepFailure(f"metric {name}: {variable} is a {_type_name(value)}, not a number") from None
            if not math.isfinite(number):
                raise StepFailure(f"metric {name}: {variable} is {number}, not a finite number")
            values[name] = number
        (self.own / "metrics.json").write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")

    # --- cells -----------------------------------------------------------------------------------------------------

    def _cell(self, cell: dict[str, Any]) -> None:
        self.count += 1
        outputs = _Outputs()
        self.outputs.append(outputs)
        self.cells.append({**cell, "outputs": outputs.items, "execution_count": self.count})
        try:
            self._execute(cell["source"], cell.get("index"))
        except StepFailure:
            raise
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt):
                raise
            kind = type(error)
            frames = traceback.format_exception(kind, error, error.__traceback__)
            # the frames of this file are not the notebook's
            shown = [frames[0], *(f for f in frames[1:] if __file__ not in f)]
            outputs.items.append(
                {"output_type": "error", "ename": kind.__name__, "evalue": str(error), "traceback": shown}
            )
            where = f"cell {cell['index'] + 1}" if cell.get("index") is not None else "a cell"
            sys.__stderr__.write("".join(shown)) if sys.__stderr__ else None
            message = f"{where} raised {kind.__name__}: {error}"
            (self.own / "failure.txt").write_text(message + "\n")
            raise _CellRaised(message) from error
        finally:
            self.outputs.pop()

    def _execute(self, source: str, index: int | None) -> None:
        code = self._python(source, index)
        filename = f"<cell {index + 1 if index is not None else '?'}>"
        tree = ast.parse(code, filename=filename)
        last: ast.expr | None = None
        if tree.body and isinstance(tree.body[-1], ast.Expr) and not code.rstrip().endswith(";"):
            last = tree.body.pop().value  # type: ignore[attr-defined]
        exec(compile(tree, filename, "exec"), self.namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last), filename, "eval"), self.namespace)
            if value is not None:
                self.outputs[-1].data(value, result=self.count)
                sys.__stdout__.write(repr(value) + "\n") if sys.__stdout__ else None

    def _python(self, source: str, index: int | None) -> str:
        """The cell's source, IPython syntax turned into Python by IPython (when the cell has any)."""
        lines = source.splitlines()
        if not any(line.lstrip().startswith(("%", "!")) for line in lines):
            return source
        try:
            from IPython.core.interactiveshell import InteractiveShell
        except ImportError:
            where = f"cell {index + 1}" if index is not None else "a cell"
            raise StepFailure(
                f"{where} uses IPython syntax (% or !), which needs IPython in the step's Python: "
                "install ipython there, or write the cell in plain Python"
            ) from None
        if self.shell is None:
            self.shell = InteractiveShell.instance(user_module=self.module, user_ns=self.namespace)
        return str(self.shell.transform_cell(source))

    def _display(self, *values: object) -> None:
        for value in values:
            if self.outputs:
                self.outputs[-1].data(value, result=None)
            if sys.__stdout__:
                sys.__stdout__.write(repr(value) + "\n")

    def _write_notebook(self) -> None:
        cells = []
        for number, cell in enumerate(self.cells):
            cells.append(
                {
                    "cell_type": "code",
                    "id": f"{self.name}-{number}"[:64],
                    "execution_count": cell["execution_count"],
                    "metadata": {
                        "tags": list(cell.get("tags") or []),
                        "rok": {"role": cell["role"], "cell": cell.get("index")},
                    },
                    "outputs": cell["outputs"],
                    "source": cell["source"],
                }
            )
        metadata = dict(self.spec.get("metadata") or {})
        metadata["rok"] = {"step": self.name, "notebook": self.spec.get("notebook")}
        document = {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}
        path = self.marshal / f"{self.name}.ipynb"
        path.write_text(json.dumps(document, indent=1, default=repr) + "\n")


class _CellRaised(Exception):
    pass


def _literal(value: object) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    return repr(value)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: executor.py SPEC.json (or - for standard input)\n")
        return 2
    try:
        text = sys.stdin.read() if argv[1] == "-" else Path(argv[1]).read_text()
        spec = json.loads(text)
        if not isinstance(spec, dict) or not {"step", "marshal_dir", "cells"} <= set(spec):
            raise ValueError("a spec has step, marshal_dir and cells")
    except (OSError, ValueError) as error:
        sys.stderr.write(f"executor: cannot read the step's spec {argv[1]}: {error}\n")
        return 2
    return Step(spec).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
