"""Pure: validation of the codes in a patient's record. Conditions are ICD-10-CM codes
(checked against the code set of `simple-icd-10-cm`); medications are ATC codes (checked by
their format: the five levels are A, A10, A10B, A10BA, A10BA02)."""

import functools
import re

import simple_icd_10_cm as icd

# The first level is one of the fourteen anatomical main groups.
ATC_PATTERN = re.compile(r"^[ABCDGHJLMNPRSV](\d{2}([A-Z]([A-Z](\d{2})?)?)?)?$")
ATC_SUBSTANCE = re.compile(r"^[ABCDGHJLMNPRSV]\d{2}[A-Z]{2}\d{2}$")


def normalise(code: str) -> str:
    return code.strip().upper()


@functools.lru_cache(maxsize=4096)
def is_icd10cm(code: str) -> bool:
    """A code of ICD-10-CM (a category or a billable code), with or without the dot; not a
    chapter ("22") or a block of categories ("E08-E13")."""
    code = normalise(code)
    return (
        bool(code)
        and len(code) <= 8
        and icd.is_valid_item(code)
        and icd.is_category_or_subcategory(code)
    )


def is_atc(code: str, *, substance: bool = False) -> bool:
    """An ATC code of any level, or only a chemical substance (level 5) when substance."""
    code = normalise(code)
    return bool((ATC_SUBSTANCE if substance else ATC_PATTERN).match(code))


def invalid_codes(*, conditions: list[str], medications: list[str]) -> dict[str, str]:
    """Field -> message for the first invalid codes, naming them (codes are not identifiers
    or free text, so they may be echoed back to the caller who sent them)."""
    errors = {}
    bad_conditions = [c for c in conditions if not isinstance(c, str) or not is_icd10cm(c)]
    if bad_conditions:
        errors["conditions"] = f"Not an ICD-10-CM code: {', '.join(map(str, bad_conditions[:5]))}."
    bad_medications = [
        m for m in medications if not isinstance(m, str) or not is_atc(m, substance=True)
    ]
    if bad_medications:
        errors["medications"] = (
            f"Not an ATC substance code (e.g. A10BA02): {', '.join(map(str, bad_medications[:5]))}."
        )
    return errors
