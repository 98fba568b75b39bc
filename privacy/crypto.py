"""Encryption at rest (pure: reads only the keys from settings, imports no app), AES-256-GCM
from `cryptography`.

Envelope encryption. Each patient has a random data key; it encrypts that patient's sensitive
fields and vault entry, and is stored only wrapped (encrypted) under a master key. Master keys
come from configuration: settings.ENCRYPTION_KEYS, "version:key" pairs (comma-separated, each
key 32 random bytes in URL-safe base64) and settings.ENCRYPTION_KEY_VERSION, the version that
wraps new data keys. Every wrapped key names the version that wrapped it, so while keys are
rotated (`rotate_keys`) reads accept any configured version. Destroying a data key makes
everything encrypted under it unreadable (crypto-shredding).

Every ciphertext is bound to where it belongs by GCM's associated data (e.g. "patient:<id>:
notes"), so a value copied to another row or field fails to decrypt instead of being read as
another patient's data. A wrong key or altered data fails GCM's authentication: it raises
CryptoError, never returns garbage. Messages name key versions and fields, never data."""

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

KEY_BYTES = 32
NONCE_BYTES = 12
DATA_FORMAT = "g1"  # AES-256-GCM under a data key, 96-bit random nonce, base64
KEY_HELP = (
    "each key is 32 random bytes in URL-safe base64, e.g. "
    'python -c "import base64,os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"'
)


class CryptoError(Exception):
    """Data that cannot be decrypted: a wrong or missing key, or altered data."""


def master_keys() -> dict[str, bytes]:
    """The configured master keys by version, checked. Raises ImproperlyConfigured naming
    the setting (never a key) when they are missing or malformed, or when the version in
    use is not among them."""
    raw: Any = getattr(settings, "ENCRYPTION_KEYS", None)
    if isinstance(raw, str):
        pairs = [item.strip() for item in raw.split(",") if item.strip()]
        if any(":" not in pair for pair in pairs):
            raise ImproperlyConfigured(
                "ENCRYPTION_KEYS must be comma-separated 'version:key' pairs."
            )
        raw = dict(pair.split(":", 1) for pair in pairs)
    if not isinstance(raw, Mapping) or not raw:
        raise ImproperlyConfigured(f"ENCRYPTION_KEYS is not set; {KEY_HELP}.")
    keys = {
        str(version).strip(): _decode_key(str(version), str(key)) for version, key in raw.items()
    }
    current = current_version()
    if current not in keys:
        raise ImproperlyConfigured(
            f"ENCRYPTION_KEY_VERSION is {current!r} but ENCRYPTION_KEYS has no key of that "
            f"version (it has {', '.join(sorted(keys))})."
        )
    return keys


def current_version() -> str:
    version = str(getattr(settings, "ENCRYPTION_KEY_VERSION", "") or "")
    if not version.isalnum():
        raise ImproperlyConfigured("ENCRYPTION_KEY_VERSION must be letters and digits only.")
    return version


def _decode_key(version: str, text: str) -> bytes:
    if not version.isalnum():
        raise ImproperlyConfigured("ENCRYPTION_KEYS: key versions are letters and digits only.")
    text = text.strip()
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise ImproperlyConfigured(
            f"ENCRYPTION_KEYS: the key of version {version} is not a valid key; {KEY_HELP}."
        )
    return key


def new_data_key() -> bytes:
    return os.urandom(KEY_BYTES)


def wrap(data_key: bytes, *, context: str, version: str | None = None) -> str:
    """`data_key` encrypted under the master key in use (or `version`): "<version>$<base64>"."""
    version = version or current_version()
    master = master_keys()[version]
    return f"{version}${_seal(master, data_key, context)}"


def unwrap(wrapped: str, *, context: str) -> bytes:
    version = wrapped_version(wrapped)
    keys = master_keys()
    if version not in keys:
        raise CryptoError(
            f"A data key is wrapped under master key version {version}, which "
            "ENCRYPTION_KEYS does not hold: add that key back (rotation is not finished)."
        )
    try:
        return _open(keys[version], wrapped.split("$", 1)[1], context)
    except CryptoError:
        raise CryptoError(
            f"A data key cannot be unwrapped with master key version {version}: the key in "
            "ENCRYPTION_KEYS is not the one that wrapped it, or the stored key was altered."
        ) from None


def wrapped_version(wrapped: str) -> str:
    version, sep, _ = wrapped.partition("$")
    if not sep or not version:
        raise CryptoError("A wrapped data key is malformed.")
    return version


def encrypt(data_key: bytes, plaintext: str, *, context: str) -> str:
    """`plaintext` under a data key: "g1$<base64 nonce + ciphertext + tag>"."""
    return f"{DATA_FORMAT}${_seal(data_key, plaintext.encode(), context)}"


def decrypt(data_key: bytes, token: str, *, context: str) -> str:
    fmt, sep, body = token.partition("$")
    if fmt != DATA_FORMAT or not sep:
        raise CryptoError(f"Encrypted data in an unknown format ({context.rsplit(':', 1)[-1]}).")
    try:
        return _open(data_key, body, context).decode()
    except CryptoError:
        raise CryptoError(
            f"Encrypted data ({context.rsplit(':', 1)[-1]}) does not decrypt under its data "
            "key: the key is wrong or destroyed, or the data was altered."
        ) from None


def encrypt_json(data_key: bytes, value: Any, *, context: str) -> str:
    return encrypt(
        data_key, json.dumps(value, sort_keys=True, separators=(",", ":")), context=context
    )


def decrypt_json(data_key: bytes, token: str, *, context: str) -> Any:
    return json.loads(decrypt(data_key, token, context=context))


def keyed_tag(data_key: bytes, purpose: str) -> str:
    """A stable tag derived from a data key (HMAC-SHA256, 128 bits): rows carrying it can be
    found while the key exists, and nobody can link them once it is destroyed."""
    return hmac.new(data_key, f"tag:{purpose}".encode(), hashlib.sha256).hexdigest()[:32]


def _seal(key: bytes, plaintext: bytes, context: str) -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext, context.encode())
    return base64.b64encode(nonce + sealed).decode()


def _open(key: bytes, body: str, context: str) -> bytes:
    try:
        raw = base64.b64decode(body, validate=True)
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
    except (InvalidTag, binascii.Error, ValueError):
        raise CryptoError("decryption failed") from None
