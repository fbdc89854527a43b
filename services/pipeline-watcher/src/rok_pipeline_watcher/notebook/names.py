"""Which module-level names a piece of notebook code reads before it assigns them, and which it assigns.

This is what marshaling rests on: a step *needs* a name it reads (at the top level, or inside a function,
class body, lambda or comprehension it defines) before its own code has assigned it, and it *defines* every name
it binds at the top level (or through ``global`` in a function). Top-level statements are followed in order, so
``x = x + 1`` needs ``x`` and ``x = 1; print(x)`` does not; the arms of an ``if`` or a ``try`` are followed one
after the other, so a name bound in either counts as bound after it. Python's own :mod:`symtable` says which
names a nested scope takes from the module.

IPython syntax (``%magic``, ``%%cell magic``, ``!shell``) is blanked out before parsing; what it does is not seen.
"""

from __future__ import annotations

import ast
import builtins
import re
import symtable
from dataclasses import dataclass

_BUILTINS = frozenset(dir(builtins)) | {"__name__", "__file__", "__builtins__", "get_ipython", "display", "In", "Out"}
_MAGIC = re.compile(r"^(\s*)([%!].*)$")


def python_source(cell: str) -> str:
    """The cell's code with IPython's own syntax turned into ``pass``, line numbers kept."""
    if cell.lstrip().startswith("%%"):
        return "\n".join("#" + line for line in cell.splitlines())
    lines = []
    for line in cell.splitlines():
        match = _MAGIC.match(line)
        # `pass` rather than a comment, so that a magic can still be the body of a block
        lines.append(f"{match.group(1)}pass  # {match.group(2)}" if match else line)
    return "\n".join(lines)


def has_code(cell: str) -> bool:
    """Whether the cell holds anything to run (not only blank lines and comments)."""
    if any(_MAGIC.match(line) for line in cell.splitlines()):
        return True
    try:
        return bool(ast.parse(cell).body)
    except SyntaxError:
        return True  # code, if wrong code: the syntax check says so


@dataclass(frozen=True)
class Names:
    needs: frozenset[str]  # read before being assigned here
    defines: frozenset[str]  # assigned at the top level


def analyse(source: str) -> Names:
    """The names ``source`` needs and defines; raises SyntaxError for code that does not parse."""
    tree = ast.parse(python_source(source))
    flow = _Flow()
    flow.block(tree.body)
    return Names(needs=frozenset(flow.needs - _BUILTINS), defines=frozenset(flow.bound))


class _Flow:
    """Statements in order: each read of a name not yet bound is a need."""

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.needs: set[str] = set()

    def block(self, body: list[ast.stmt]) -> None:
        for statement in body:
            self.statement(statement)

    def part(self, code: ast.AST | list[ast.expr]) -> None:
        """A part that runs as a whole: what it reads first, then what it binds."""
        reads, binds = _symbols(code)
        self.needs |= reads - self.bound
        self.bound |= binds

    def statement(self, node: ast.stmt) -> None:
        match node:
            case ast.For() | ast.AsyncFor():
                self.part([node.iter])
                self.part(ast.Assign(targets=[node.target], value=ast.Constant(None)))
                self.block(node.body)
                self.block(node.orelse)
            case ast.While() | ast.If():
                self.part([node.test])
                self.block(node.body)
                self.block(node.orelse)
            case ast.With() | ast.AsyncWith():
                for item in node.items:
                    self.part([item.context_expr])
                    if item.optional_vars is not None:
                        self.part(ast.Assign(targets=[item.optional_vars], value=ast.Constant(None)))
                self.block(node.body)
            case ast.Try() | ast.TryStar():
                self.block(node.body)
                for handler in node.handlers:
                    if handler.type is not None:
                        self.part([handler.type])
                    if handler.name:
                        self.bound.add(handler.name)
                    self.block(handler.body)
                self.block(node.orelse)
                self.block(node.finalbody)
            case ast.Delete():
                deleted = {t.id for t in node.targets if isinstance(t, ast.Name)}
                self.part([t for t in node.targets if not isinstance(t, ast.Name)])  # `del x[i]` reads x and i
                self.needs |= deleted - self.bound  # `del x` needs an x to delete
                self.bound -= deleted
            case _:
                self.part(node)


def _symbols(code: ast.AST | list[ast.expr]) -> tuple[set[str], set[str]]:
    """The module-level names ``code`` reads (itself or in the scopes it defines) and binds."""
    if isinstance(code, list):
        module = ast.Module(body=[ast.Expr(value=e) for e in code], type_ignores=[])
    else:
        module = ast.Module(body=[code], type_ignores=[])  # type: ignore[list-item]
    ast.fix_missing_locations(module)
    table = symtable.symtable(ast.unparse(module), "<cell>", "exec")
    reads: set[str] = set()
    binds: set[str] = set()
    for symbol in table.get_symbols():
        if symbol.is_referenced():
            reads.add(symbol.get_name())
        if symbol.is_assigned() or symbol.is_imported():
            binds.add(symbol.get_name())
    if isinstance(code, ast.AugAssign) and isinstance(code.target, ast.Name):
        reads.add(code.target.id)  # `x += 1` reads x first
    pending = list(table.get_children())
    while pending:
        scope = pending.pop()
        pending.extend(scope.get_children())
        for symbol in scope.get_symbols():
            if symbol.is_global() and symbol.is_referenced():
                reads.add(symbol.get_name())
            if symbol.is_declared_global() and symbol.is_assigned():
                binds.add(symbol.get_name())
    return reads, binds
