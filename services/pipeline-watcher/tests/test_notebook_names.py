"""The names a step's code needs from earlier steps and the names it defines, found by reading the code."""

from __future__ import annotations

import pytest
from rok_pipeline_watcher.notebook.names import analyse, has_code


@pytest.mark.parametrize(
    ("source", "needs", "defines"),
    [
        ("x = x + 1", {"x"}, {"x"}),
        ("x = 1\nprint(x)", set(), {"x"}),
        ("import numpy as np\ny = np.mean(df)", {"df"}, {"np", "y"}),
        ("def f(a):\n    return a + model\nres = f(3)", {"model"}, {"f", "res"}),
        ("for i in items:\n    total += i", {"items", "total"}, {"i", "total"}),
        ("class M(Base):\n    k = v\n    def p(self):\n        return w\nm = M()", {"Base", "v", "w"}, {"M", "m"}),
        ("y = [a * b for a in xs]", {"b", "xs"}, {"y"}),
        ("%matplotlib inline\n!ls\nz = q", {"q"}, {"z"}),
        ("with open(p) as fh:\n    data = fh.read()", {"p"}, {"data", "fh"}),
        ("def g():\n    global gg\n    gg = 1\ng()", set(), {"g", "gg"}),
        ("del a", {"a"}, set()),
        ("if c:\n    r = 1\nelse:\n    r = 2\nprint(r)", {"c"}, {"r"}),
        ("f = lambda t: t * scale", {"scale"}, {"f"}),
        ("try:\n    v = risky()\nexcept KeyError as e:\n    v = str(e)", {"risky"}, {"v"}),
        ("if (n := len(seq)) > 2:\n    print(n)", {"seq"}, {"n"}),
    ],
)
def test_needs_are_read_before_assigned_and_defines_are_top_level_bindings(
    source: str, needs: set[str], defines: set[str]
) -> None:
    names = analyse(source)
    assert (set(names.needs), set(names.defines) - {"e"}) == (needs, defines)


def test_a_cell_of_comments_has_no_code_and_a_magic_is_code() -> None:
    assert not has_code("# nothing\n\n   ")
    assert has_code("!pip list")
    assert has_code("x = 1")
