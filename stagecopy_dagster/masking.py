"""The `mask: hash` key: read from `$STAGECOPY_MASK_KEY`, handed to the source session unseen.

The key is the UTF-8 bytes of the variable. HMAC-SHA256 pads it to SHA-256's 64-byte block
(hashing a longer key first) and XORs it with the inner and outer pads; the client does that
here and sets the two padded keys as transaction-local settings on the source with bind
parameters (:data:`~stagecopy_dagster.statements.projection.SET_MASK_KEYS`). No statement text,
log line, error or metadata ever holds the key or a padded key.
"""

from __future__ import annotations

import hashlib
import os

import psycopg

from stagecopy_dagster.errors import SpecError
from stagecopy_dagster.statements.projection import (
    INNER_KEY_SETTING,
    OUTER_KEY_SETTING,
    SET_MASK_KEYS,
)

#: The environment variable holding the `mask: hash` key.
MASK_KEY_ENV = "STAGECOPY_MASK_KEY"
_BLOCK = 64  # SHA-256's block size in bytes


def padded_keys(key: bytes) -> tuple[bytes, bytes]:
    """(K' xor ipad, K' xor opad) of HMAC-SHA256 (RFC 2104) for `key`.

    Example:
        >>> inner, outer = padded_keys(b"k")
        >>> len(inner), inner[:2].hex(), outer[:2].hex()
        (64, '5d36', '375c')
    """
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def mask_key(*, table: str) -> bytes:
    """The key's UTF-8 bytes; an error naming the variable (never a value) when it is unset."""
    value = os.environ.get(MASK_KEY_ENV, "")
    if not value:
        raise SpecError(
            f"`mask: hash` needs the key in the environment variable {MASK_KEY_ENV} "
            "(it is not set, or empty); nothing was written",
            table=table,
        )
    return value.encode("utf-8")


def install_mask_key(conn: psycopg.Connection, key: bytes) -> None:
    """Set the padded keys on `conn` for the rest of its transaction (bind parameters only)."""
    inner, outer = padded_keys(key)
    conn.execute(SET_MASK_KEYS, (INNER_KEY_SETTING, inner.hex(), OUTER_KEY_SETTING, outer.hex()))
