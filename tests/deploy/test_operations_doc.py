"""docs/operations.md lists every setting of every service with its default, and names what deploy/ has."""

from __future__ import annotations

import re

import pytest

from .manifests import DEPLOY, ROOT, SERVICES
from .test_settings_env import settings_classes

DOC = (ROOT / "docs" / "operations.md").read_text()
ROWS = {m.group(1): m.group(2).strip() for m in re.finditer(r"^\| `(ROK_[A-Z0-9_]+)` \| ([^|]*) \|", DOC, flags=re.M)}


def _documented_default(value: object) -> str | None:
    if value is None:
        return "(none)"
    if value == "":
        return '""'
    return f"`{value}`"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_setting_is_documented_with_its_default(service: str):
    for cls in settings_classes(service):
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            variable = f"{prefix}{name}".upper()
            assert variable in ROWS, f"docs/operations.md does not document {variable} ({cls.__name__})"
            if field.default_factory is None:
                documented = [m.group(1) for m in re.finditer(rf"^\| `{variable}` \| ([^|]*) \|", DOC, flags=re.M)]
                assert _documented_default(field.default) in [d.strip() for d in documented], (
                    f"docs/operations.md gives {variable} the default {documented}, the code {field.default!r}"
                )


def test_every_documented_setting_exists():
    known = {
        f"{cls.model_config.get('env_prefix', '')}{name}".upper()
        for service in SERVICES
        for cls in settings_classes(service)
        for name in cls.model_fields
    }
    from rok_operator.settings import OperatorSettings

    known |= {f"ROK_{name}".upper() for name in OperatorSettings.model_fields}
    assert set(ROWS) <= known, f"documented but read by nothing: {sorted(set(ROWS) - known)}"


def test_the_paths_the_doc_names_exist():
    for path in re.findall(r"`(deploy/[\w./-]+)`", DOC):
        assert (ROOT / path.rstrip("/")).exists() or list(ROOT.glob(path)), f"docs/operations.md names {path}"
    assert (DEPLOY / "observability" / "alerts.yaml").exists()
