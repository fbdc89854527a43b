"""``rok://`` URLs: the names of what the registry records, parsed and formatted in one canonical form (docs/urls.md).

::

    rok://<namespace>/<bucket>                                  a bucket (one per experiment)
    rok://<namespace>/<bucket>/<file>                           a file (one per run)
    rok://<namespace>/<bucket>/<file>?version=<id>              a version (the volumes of one snapshot)
    rok://<namespace>/<bucket>/<file>?version=<id>&volume=<v>   one volume of a version

>>> str(parse_url("rok://team-a/exp-3mis2/train-3mis2-a1b2?version=k3x9q2mf7z"))
'rok://team-a/exp-3mis2/train-3mis2-a1b2?version=k3x9q2mf7z'
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, unquote, urlsplit

from rokcommon.errors import Forbidden, InvalidRequest
from rokcommon.events import Model

SCHEME = "rok"
_NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,251}[a-z0-9])?$")
_VERSION_ID = re.compile(r"^[a-z0-9]{4,32}$")
_VOLUME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")


class InvalidUrl(InvalidRequest):
    """A string that is not a well-formed ``rok://`` URL; the message says which part is wrong."""


class RokUrl(Model):
    """A parsed ``rok://`` URL. ``str(url)`` gives it back in its one canonical form."""

    namespace: str
    bucket: str
    file: str | None = None
    version: str | None = None
    volume: str | None = None

    def __str__(self) -> str:
        return format_url(self.namespace, self.bucket, self.file, self.version, self.volume)

    @property
    def version_url(self) -> str:
        """The URL of the whole version (without ``&volume=``)."""
        return format_url(self.namespace, self.bucket, self.file, self.version)


def format_url(
    namespace: str, bucket: str, file: str | None = None, version: str | None = None, volume: str | None = None
) -> str:
    """``format_url("team-a", "exp-3mis2", "train-3mis2-a1b2", "k3x9q2mf7z")`` → ``rok://team-a/...?version=...``."""
    if version and not file:
        raise InvalidUrl(f"a version URL needs a file (version {version!r} in bucket {bucket!r})")
    if volume and not version:
        raise InvalidUrl(f"a volume URL needs a version (volume {volume!r})")
    url = f"{SCHEME}://{namespace}/{bucket}"
    if file:
        url += f"/{file}"
    if version:
        url += f"?version={version}"
    if volume:
        url += f"&volume={quote(volume, safe='')}"
    return url


def parse_url(url: str) -> RokUrl:
    """Parse a ``rok://`` URL, raising :class:`InvalidUrl` that names what is wrong and how it should look."""
    shape = "rok://<namespace>/<bucket>/<file>?version=<id>[&volume=<name>]"
    if not isinstance(url, str) or not url.strip():
        raise InvalidUrl(f"empty URL: expected {shape}")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise InvalidUrl(f"{url!r} is not a rok URL: it must start with rok:// ({shape})")
    namespace = parts.netloc
    if not _NAMESPACE.match(namespace):
        raise InvalidUrl(f"{url!r}: namespace {namespace!r} is not a valid namespace name ({shape})")
    if parts.fragment:
        raise InvalidUrl(f"{url!r}: a rok URL has no #fragment")
    path = [unquote(p) for p in parts.path.strip("/").split("/")] if parts.path.strip("/") else []
    if not path or len(path) > 2:
        raise InvalidUrl(f"{url!r}: expected /<bucket> or /<bucket>/<file> after the namespace ({shape})")
    for what, name in zip(("bucket", "file"), path, strict=False):
        if not _NAME.match(name):
            raise InvalidUrl(f"{url!r}: {what} {name!r} must be lower-case letters, digits and '-'")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise InvalidUrl(f"{url!r}: malformed query {parts.query!r} ({shape})") from None
    unknown = set(query) - {"version", "volume"}
    if unknown:
        raise InvalidUrl(f"{url!r}: unknown parameter(s) {', '.join(sorted(unknown))}; only version and volume")
    for key, values in query.items():
        if len(values) != 1:
            raise InvalidUrl(f"{url!r}: {key} is given {len(values)} times")
    version = query.get("version", [None])[0]
    volume = query.get("volume", [None])[0]
    if version is not None and not _VERSION_ID.match(version):
        raise InvalidUrl(f"{url!r}: version {version!r} is not a version id (4-32 lower-case letters and digits)")
    if version is not None and len(path) < 2:
        raise InvalidUrl(f"{url!r}: a version belongs to a file: rok://{namespace}/{path[0]}/<file>?version=…")
    if volume is not None and version is None:
        raise InvalidUrl(f"{url!r}: volume= needs version= as well ({shape})")
    if volume is not None and not _VOLUME.match(volume):
        raise InvalidUrl(f"{url!r}: volume {volume!r} is not a valid volume name")
    return RokUrl(
        namespace=namespace,
        bucket=path[0],
        file=path[1] if len(path) > 1 else None,
        version=version,
        volume=volume,
    )


def parse_url_in(namespace: str, url: str) -> RokUrl:
    """Parse ``url`` as :func:`parse_url` does, refusing one of another namespace than ``namespace`` (the one the
    request was authorized for) with :class:`~rokcommon.errors.Forbidden`."""
    parsed = parse_url(url)
    if parsed.namespace != namespace:
        raise Forbidden(f"{url} belongs to namespace {parsed.namespace!r}; you are asking from namespace {namespace!r}")
    return parsed
