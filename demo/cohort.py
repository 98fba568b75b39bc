"""Pure: a synthetic cohort for the demo and the benchmarks. Coded conditions and medications
(valid ICD-10-CM and ATC codes) drawn with plausible prevalences, an agenda that follows from
them, and coarse demographics. Nothing here identifies anyone: every patient is invented."""

from dataclasses import dataclass

import numpy as np

# slug: (share of the cohort, ICD-10-CM codes to pick one from, ATC codes to pick one from)
CONDITIONS: dict[str, tuple[float, tuple[str, ...], tuple[str, ...]]] = {
    "hypertension": (0.35, ("I10",), ("C09AA05", "C08CA01")),
    "type-2-diabetes": (0.22, ("E11.9", "E11.65"), ("A10BA02",)),
    "insulin-treated": (0.08, ("E10.9",), ("A10AE04",)),
    "heart-failure": (0.08, ("I50.9",), ("C03CA01",)),
    "copd": (0.10, ("J44.9",), ("R03BB04", "R03AC02")),
    "pregnancy": (0.06, ("Z34.90", "Z33.1"), ()),
    "chronic-kidney-disease": (0.10, ("N18.30",), ()),
    "depression": (0.20, ("F32.9", "F33.1"), ("N06AB06",)),
    "eating-disorder": (0.03, ("F50.00",), ()),
}

# The care-plan goals a group's clinicians usually set, with a typical weight.
GOALS_BY_GROUP: dict[str, dict[str, float]] = {
    "hypertension": {"medication": 0.6, "activity": 0.5, "diet": 0.5, "monitoring": 0.4},
    "type-2-diabetes": {"diet": 0.7, "activity": 0.6, "medication": 0.5, "monitoring": 0.4},
    "insulin-treated": {"monitoring": 0.8, "medication": 0.7, "diet": 0.5},
    "heart-failure": {"medication": 0.9, "monitoring": 0.7, "activity": 0.4},
    "copd": {"medication": 0.8, "activity": 0.6},
    "pregnancy": {"sleep": 0.5, "activity": 0.5, "diet": 0.5, "hydration": 0.4},
    "chronic-kidney-disease": {"medication": 0.6, "diet": 0.6, "monitoring": 0.5},
    "depression": {"mood": 0.9, "sleep": 0.6, "activity": 0.5},
    "eating-disorder": {"mood": 0.7, "diet": 0.4, "sleep": 0.4},
}
DEFAULT_GOALS = {"activity": 0.6, "sleep": 0.4, "mood": 0.3, "hydration": 0.3}

AGE_BANDS = ("18-29", "30-44", "45-59", "60-74", "75+")
AGE_SHARES = (0.12, 0.2, 0.28, 0.27, 0.13)
TIMEZONES = (
    "Europe/London",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Sydney",
)
TIMEZONE_SHARES = (0.5, 0.2, 0.15, 0.1, 0.05)


@dataclass(frozen=True)
class SyntheticPatient:
    age_band: str
    sex: str
    timezone: str
    conditions: tuple[str, ...]
    medications: tuple[str, ...]
    groups: tuple[str, ...]
    goals: dict[str, float]


def synthetic_cohort(n: int, *, seed: int) -> list[SyntheticPatient]:
    rng = np.random.default_rng([seed, 3])
    return [_one(rng) for _ in range(n)]


def _one(rng: np.random.Generator) -> SyntheticPatient:
    age_band = str(rng.choice(AGE_BANDS, p=AGE_SHARES))
    sex = str(rng.choice(["female", "male", "other"], p=[0.51, 0.48, 0.01]))
    groups = []
    for slug, (share, _, _) in CONDITIONS.items():
        if slug == "pregnancy" and (sex != "female" or age_band not in ("18-29", "30-44")):
            continue
        scale = 3.0 if slug == "pregnancy" else 1.0  # a share of women of child-bearing age
        if slug in ("heart-failure", "chronic-kidney-disease", "copd") and age_band in (
            "18-29",
            "30-44",
        ):
            scale = 0.2
        if rng.random() < share * scale:
            groups.append(slug)
    conditions, medications = [], []
    for slug in groups:
        _, icd, atc = CONDITIONS[slug]
        conditions.append(str(rng.choice(icd)))
        if atc and rng.random() < 0.85:
            medications.append(str(rng.choice(atc)))
    return SyntheticPatient(
        age_band=age_band,
        sex=sex,
        timezone=str(rng.choice(TIMEZONES, p=TIMEZONE_SHARES)),
        conditions=tuple(sorted(set(conditions))),
        medications=tuple(sorted(set(medications))),
        groups=tuple(sorted(groups)),
        goals=_agenda(groups, rng),
    )


def _agenda(groups: list[str], rng: np.random.Generator) -> dict[str, float]:
    """The strongest weight any of the patient's groups gives each goal, perturbed, keeping the
    top two to four goals."""
    merged: dict[str, float] = {}
    for slug in groups or ["none"]:
        for goal, weight in GOALS_BY_GROUP.get(slug, DEFAULT_GOALS).items():
            merged[goal] = max(merged.get(goal, 0.0), weight)
    noisy = {g: float(np.clip(w + rng.normal(0, 0.12), 0.1, 1.0)) for g, w in merged.items()}
    keep = int(rng.integers(2, 5))
    top = sorted(noisy.items(), key=lambda item: -item[1])[:keep]
    return {goal: round(weight, 2) for goal, weight in top}
