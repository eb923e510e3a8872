"""Storage credentials for a submitted job, sealed with the cluster's authentication token.

Ray logs what a job is submitted with: the runtime environment, environment variables included,
goes to the cluster's ``runtime_env_agent.log`` and to anyone who lists jobs, the entrypoint to
the job's log.  So credentials cannot travel in the clear in any of them.  The channels considered:

- A file in the uploaded ``working_dir`` (or a ``py_modules`` package): not logged, but stored
  in the clear in the cluster's GCS (kept in Redis on fault-tolerant clusters) and unpacked with
  the default file mode under every node's session directory, for every worker of the job.
- Refusing credentials altogether (an instance profile, IRSA, the nodes' environment): the
  safest, and still the recommendation; but some clusters must read a bucket of another account.
- Sealed in an environment variable with a key only the cluster and its users hold.  A cluster
  with token authentication has exactly that key: the token every client needs to submit a job,
  and every job's driver needs to join its own cluster (``RAY_AUTH_TOKEN``, the file
  ``RAY_AUTH_TOKEN_PATH`` names, or ``~/.ray/auth_token``).  What Ray logs is then ciphertext;
  whoever could open it holds the token, and with it could already run any code on the cluster.

The third is the channel: AES-256-GCM under a key derived (HKDF-SHA256, a random salt per
submission) from the token.  A cluster without token authentication gets no credentials at all:
its Jobs API is open to anyone who reaches it, and there is no key to seal with.  On the cluster,
``jobs.job_entry`` unseals them into the driver's own process before the render job starts;
workers receive them inside the job's configuration, as they do for a local run.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Mapping, MutableMapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEALED_OPTIONS_ENV = "HELLOMEME_SEALED_STORAGE_OPTIONS"
_FORMAT = "hm-sealed-v1."
_INFO = b"hellomeme-batch sealed storage options v1"
_SALT_BYTES, _NONCE_BYTES = 16, 12


class SealError(Exception):
    """Credentials cannot be sealed or unsealed; the message says why (never what they are)."""


def cluster_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The Ray cluster's authentication token as Ray's own clients find it, or None without token authentication.

    ``RAY_AUTH_MODE=token`` (or unset with a token present, as Ray does): ``RAY_AUTH_TOKEN``, else
    the file ``RAY_AUTH_TOKEN_PATH`` names, else ``~/.ray/auth_token``.
    """
    environ = os.environ if environ is None else environ
    mode = (environ.get("RAY_AUTH_MODE") or "").strip().lower()
    if mode not in ("", "token"):
        return None
    token = (environ.get("RAY_AUTH_TOKEN") or "").strip()
    if token:
        return token
    paths = [environ.get("RAY_AUTH_TOKEN_PATH"), str(Path.home() / ".ray" / "auth_token")]
    for path in filter(None, paths):
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if token:
            return token
    return None


def _key(token: str, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO).derive(token.encode("utf-8"))


def seal(options: Mapping[str, Any], token: str) -> str:
    """``options`` (JSON-serialisable) encrypted and authenticated under a key derived from ``token``."""
    salt, nonce = os.urandom(_SALT_BYTES), os.urandom(_NONCE_BYTES)
    plain = json.dumps(options, sort_keys=True).encode("utf-8")
    sealed = AESGCM(_key(token, salt)).encrypt(nonce, plain, _INFO)
    return _FORMAT + base64.urlsafe_b64encode(salt + nonce + sealed).decode("ascii")


def unseal(blob: str, token: str) -> dict[str, Any]:
    """The options :func:`seal` sealed; SealError if the blob is damaged or was sealed with another token."""
    if not blob.startswith(_FORMAT):
        raise SealError("sealed storage options are not in a known format")
    try:
        raw = base64.urlsafe_b64decode(blob[len(_FORMAT):].encode("ascii"))
        salt, nonce, sealed = raw[:_SALT_BYTES], raw[_SALT_BYTES:_SALT_BYTES + _NONCE_BYTES], raw[
            _SALT_BYTES + _NONCE_BYTES:]
        plain = AESGCM(_key(token, salt)).decrypt(nonce, sealed, _INFO)
    except (InvalidTag, ValueError):
        raise SealError("sealed storage options do not open with this cluster's token "
                        "(sealed for another cluster, or the token changed since submission)") from None
    options = json.loads(plain)
    if not isinstance(options, dict):
        raise SealError("sealed storage options are not a mapping")
    return options


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def unseal_into_environment(options_env: str, environ: MutableMapping[str, str] | None = None) -> bool:
    """Move sealed options (``SEALED_OPTIONS_ENV``) into the plain options variable ``options_env`` of this process.

    Called by the job's entry point on the cluster, before the render job reads its storage
    options.  The sealed variable is removed.  Returns whether there was anything to unseal;
    SealError if there was and it cannot be opened (no token here, another token).
    """
    environ = os.environ if environ is None else environ
    blob = environ.pop(SEALED_OPTIONS_ENV, None)
    if not blob:
        return False
    token = cluster_token(environ)
    if token is None:
        raise SealError("storage credentials were sent sealed with the cluster's token, but this job finds no "
                        "token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)")
    plain = json.loads(environ.get(options_env) or "{}")
    environ[options_env] = json.dumps(merge(plain, unseal(blob, token)), sort_keys=True)
    return True
