"""Keyed pseudonyms (pure, reads settings only). An identifier from outside (a record number,
an e-mail address, a data set's patient id) becomes "p<key version>_<32 hex digits>": the
HMAC-SHA256, under the secret key of that version, of "<namespace>:<normalised identifier>",
truncated to 128 bits. Without the key nobody can recompute it; a plain hash of an identifier
would fall to anyone who tries every identifier. The namespace keeps pseudonyms of different
sources apart, so two data sets cannot be joined on them. The key version in the pseudonym
says which key made it, so keys can be rotated (settings.PSEUDONYM_KEYS, version -> secret;
settings.PSEUDONYM_KEY_VERSION, the one in use)."""

import hashlib
import hmac
import unicodedata

from django.conf import settings

HEX_DIGITS = 32


def pseudonym(identifier: str, *, namespace: str, version: str | None = None) -> str:
    """The pseudonym of `identifier` in `namespace`, under the current key (or `version`).
    Identifiers are normalised first (Unicode NFKC, surrounding space, case), so "  AB12 "
    and "ab12" are the same person."""
    if not namespace or ":" in namespace:
        raise ValueError("a namespace is a non-empty name without ':'")
    version = version or settings.PSEUDONYM_KEY_VERSION
    secret = settings.PSEUDONYM_KEYS[version]
    message = f"{namespace}:{normalise(identifier)}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"p{version}_{digest[:HEX_DIGITS]}"


def normalise(identifier: str) -> str:
    return unicodedata.normalize("NFKC", identifier).strip().casefold()
