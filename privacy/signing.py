"""Ed25519 signatures on report exports. The key's 32-byte seed is the SHA-256 of
settings.REPORT_SIGNING_KEY; its id (16 hex digits of the public key's SHA-256) goes into every
manifest. Verification always uses the configured key (or a public key the auditor was given),
never one that arrived with the file."""

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings

ALGORITHM = "Ed25519"


class SignatureError(Exception):
    """The signature does not verify under the trusted key; the message says why."""


def _private_key() -> Ed25519PrivateKey:
    seed = hashlib.sha256(settings.REPORT_SIGNING_KEY.encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_hex() -> str:
    raw = _private_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return raw.hex()


def key_id(public_hex: str | None = None) -> str:
    public = bytes.fromhex(public_hex or public_key_hex())
    return hashlib.sha256(public).hexdigest()[:16]


def sign(message: bytes) -> str:
    return base64.b64encode(_private_key().sign(message)).decode()


def verify(message: bytes, signature: str, *, public_hex: str | None = None) -> None:
    """Raises SignatureError unless `signature` is the trusted key's signature of message."""
    try:
        raw = base64.b64decode(signature, validate=True)
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex or public_key_hex()))
        key.verify(raw, message)
    except (InvalidSignature, binascii.Error, ValueError):
        raise SignatureError("the signature does not match the content and key") from None
