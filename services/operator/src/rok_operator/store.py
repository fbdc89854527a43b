"""Is the object store a RokCluster names usable: its Secret complete, its endpoint answering?

The operator asks nothing of the store's contents (it holds no bucket and reads no data): any HTTP answer from
the endpoint, an S3 error included, means the services will reach it; no answer means they will not.
"""

from __future__ import annotations

import aiohttp
from rokcommon.errors import PermanentError, TemporaryError

REQUIRED_KEYS = ("repository", "access-key-id", "secret-access-key")


class StoreSecretInvalid(PermanentError):
    pass


class StoreUnreachable(TemporaryError):
    pass


def endpoint_of(secret: dict[str, str], secret_name: str) -> str:
    missing = [k for k in REQUIRED_KEYS if not secret.get(k)]
    if missing:
        raise StoreSecretInvalid(f"Secret {secret_name} (spec.store.secretName) lacks the keys {', '.join(missing)}")
    if not secret["repository"].startswith("s3://"):
        raise StoreSecretInvalid(
            f"Secret {secret_name} key repository is {secret['repository']!r}: a cluster needs s3://BUCKET/PREFIX"
        )
    if secret.get("endpoint"):
        return secret["endpoint"].rstrip("/")
    return f"https://s3.{secret.get('region') or 'us-east-1'}.amazonaws.com"


async def check_reachable(endpoint: str, *, timeout: float = 5.0) -> None:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(endpoint, allow_redirects=False) as response:
                await response.read()
    except (aiohttp.ClientError, TimeoutError) as error:
        raise StoreUnreachable(
            f"the object store at {endpoint} does not answer ({error or type(error).__name__})"
        ) from error
