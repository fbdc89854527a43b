"""The repository's config object: its format version, id, and the parameters its data was written with."""

from __future__ import annotations

import datetime
import json
import secrets
from typing import Any

from rokstore.chunker import AVG_SIZE, MAX_SIZE, MIN_SIZE
from rokstore.errors import CorruptData, UnsupportedFormat
from rokstore.repository.packs import PACK_TARGET, ZSTD_LEVEL

FORMAT = "rok-store"
FORMAT_VERSION = 2
CONFIG_KEY = "config"


def new_config() -> dict[str, Any]:
    """The config of a new repository: a fresh id and the parameters this rok writes with."""
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "id": secrets.token_hex(16),
        "created": datetime.datetime.now(datetime.UTC).isoformat(),
        "chunker": {
            "algorithm": "fastcdc2020",
            "avg_size": AVG_SIZE,
            "min_size": MIN_SIZE,
            "max_size": MAX_SIZE,
        },
        "hash": "blake3",
        "compression": {"algorithm": "zstd", "level": ZSTD_LEVEL},
        "pack_size": PACK_TARGET,
    }


def parse_config(data: bytes, url: str) -> dict[str, Any]:
    """The config of the repository at ``url``; CorruptData or UnsupportedFormat when this rok cannot use it."""
    try:
        config = json.loads(data)
    except ValueError:
        raise CorruptData(f"the config object of {url} is not valid JSON; the repository is damaged") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise UnsupportedFormat(f"{url} does not hold a rok repository (config format {config.get('format')!r})")
    if config.get("version") == 1:
        raise UnsupportedFormat(
            f"repository {url} uses format version 1 (one manifest per snapshot); this rok reads version "
            f"{FORMAT_VERSION} (tree objects): restore what you still need with the rok that wrote it, then "
            "snapshot it into a new repository ('rok repo init')"
        )
    if config.get("version") != FORMAT_VERSION:
        raise UnsupportedFormat(
            f"repository {url} uses format version {config.get('version')!r}, this rok reads version "
            f"{FORMAT_VERSION}; upgrade rok"
        )
    return config
