"""Pure: which medical groups a set of codes puts a patient in. No ORM here."""

from collections.abc import Iterable, Mapping, Sequence


def normalise_code(code: str) -> str:
    return code.strip().upper().replace(".", "")


def groups_for_codes(
    *,
    conditions: Iterable[str],
    medications: Iterable[str],
    definitions: Mapping[str, tuple[Sequence[str], Sequence[str]]],
) -> set[str]:
    """definitions maps a group slug to (ICD-10 prefixes, ATC prefixes). A code belongs to a
    group when it starts with one of the group's prefixes (dots ignored)."""
    condition_codes = [normalise_code(c) for c in conditions]
    medication_codes = [normalise_code(m) for m in medications]
    found = set()
    for slug, (icd_prefixes, atc_prefixes) in definitions.items():
        icd = tuple(normalise_code(p) for p in icd_prefixes)
        atc = tuple(normalise_code(p) for p in atc_prefixes)
        icd_hit = bool(icd) and any(c.startswith(icd) for c in condition_codes)
        atc_hit = bool(atc) and any(m.startswith(atc) for m in medication_codes)
        if icd_hit or atc_hit:
            found.add(slug)
    return found
