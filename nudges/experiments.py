"""Pure: experiment arms. A patient's arm comes from a keyed hash (HMAC-SHA256) of the
experiment's name and their pseudonym: the same patient stays in the same arm, and nobody
without the key can tell or choose an arm. Arms: treatment (the champion model), control
(the baseline policy) and holdout (no nudges)."""

import hashlib
import hmac

ARMS = ("treatment", "control", "holdout")
BUCKETS = 10_000


def parse_arms(text: str) -> list[tuple[str, int]]:
    """'treatment:80,control:15,holdout:5' -> [(arm, percent)], the percents summing to 100."""
    arms = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, share = part.partition(":")
        if name not in ARMS or not share.isdigit():
            raise ValueError(f"Not an arm and a whole percent: {part!r}")
        arms.append((name, int(share)))
    if sum(share for _, share in arms) != 100 or len({n for n, _ in arms}) != len(arms):
        raise ValueError("The arms' percents must add up to 100, each arm once.")
    return arms


def arm_for(pseudonym: str, *, key: bytes, experiment: str, arms: list[tuple[str, int]]) -> str:
    digest = hmac.new(key, f"{experiment}:{pseudonym}".encode(), hashlib.sha256).digest()
    bucket = int.from_bytes(digest[:8], "big") % BUCKETS
    edge = 0
    for name, share in arms:
        edge += share * BUCKETS // 100
        if bucket < edge:
            return name
    return arms[-1][0]
