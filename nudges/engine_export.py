"""Pure: the engine's own decisions as a decision log (docs/decision-log.md). The service
(nudges.services.decision_logs) reads the rows; here they are per-decision arrays, the outcome
rules apply to whole arrays at once, and the arrays become a DecisionLog (for training and
evaluation) or records (for a file), which say the same."""

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from nudges import measures
from nudges.decision_log import NONE, DecisionLog

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class Profiles:
    """The part of the context that follows from a receipt's agenda and medical groups, once
    per distinct pair: g_<group> 1/0 for every group (left out when the groups were not known)
    and w_<goal> for every goal."""

    context: list[dict[str, Any]]
    flags: np.ndarray  # (P, groups), NaN where the groups were not known
    weights: np.ndarray  # (P, goals)

    @classmethod
    def parse(cls, texts: Sequence[str], groups: Sequence[str]) -> "Profiles":
        """texts: JSON [agenda, groups] as the receipts hold them."""
        flags = np.full((len(texts), len(groups)), np.nan)
        weights = np.zeros((len(texts), len(measures.GOALS)))
        context = []
        for p, text in enumerate(texts):
            agenda, member = orjson.loads(text)
            agenda = agenda or {}
            weights[p] = [float(agenda.get(g, 0.0)) for g in measures.GOALS]
            if member is not None:
                flags[p] = [g in member for g in groups]
            names = [f"g_{g}" for g in groups] if member is not None else []
            values = flags[p].astype(int).tolist() if member is not None else []
            entry: dict[str, Any] = dict(zip(names, values, strict=True))
            entry.update(zip([f"w_{g}" for g in measures.GOALS], weights[p].tolist(), strict=True))
            context.append(entry)
        return cls(context=context, flags=flags, weights=weights)


def outcomes(
    *,
    goal: np.ndarray,
    done: np.ndarray,
    closed: np.ndarray,
    delivered: np.ndarray,
    mature: np.ndarray,
    health_delta: np.ndarray,
    weight: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(acted, health_delta, reward), NaN where unknown. Per decision: the chosen template's
    goal (-1: no nudge), whether its delivery is done, closed (a final state) and ever
    delivered, whether the outcome window is over, the measured health delta (NaN: unknown)
    and the agenda weight of the goal.

    acted: done, or delivered and closed without being done; unknown otherwise. reward: goal
    weight x acted x health delta, 0 when nothing was acted on, given only once the window is
    over and the delivery closed, for acted and unacted decisions alike."""
    nudge = goal >= 0
    acted = np.where(nudge & delivered & closed, done.astype(float), np.nan)
    delta = np.round(np.where(nudge, health_delta, np.nan), 6)
    settled = mature & (~nudge | closed)
    reward = np.where(nudge & done, np.round(weight * delta, 6), 0.0)
    return acted, delta, np.where(settled, reward, np.nan)


@dataclass
class Exported:
    """The exported decisions, in time order."""

    pseudonym: np.ndarray  # (n,) object
    micros: np.ndarray  # (n,) Unix time in microseconds
    offsets: np.ndarray  # (n + 1,): decision i's candidates are avail[offsets[i]:offsets[i+1]]
    avail: np.ndarray  # (k,) object: slug@version
    prob: np.ndarray  # (k,)
    none_prob: np.ndarray  # (n,)
    action: np.ndarray  # (n,) object: slug@version or None
    propensity: np.ndarray  # (n,)
    profile: np.ndarray  # (n,) index into profiles
    profiles: Profiles
    groups: Sequence[str]
    age_band: np.ndarray  # (n,) object
    sex: np.ndarray  # (n,) object
    tenure_days: np.ndarray  # (n,)
    local_hour: np.ndarray  # (n,) int
    weekday: np.ndarray  # (n,) int
    trigger: np.ndarray  # (n,) object
    acted: np.ndarray  # (n,) 0/1, NaN unknown
    health_delta: np.ndarray  # (n,) NaN unknown
    reward: np.ndarray  # (n,) NaN unknown

    def __len__(self) -> int:
        return len(self.propensity)

    def log(self) -> DecisionLog:
        code: dict[str, int] = {}
        avail = np.array([code.setdefault(a, len(code)) for a in self.avail.tolist()])
        n = len(self)
        context: dict[str, np.ndarray] = {
            f"g_{g}": self.profiles.flags[self.profile, j] for j, g in enumerate(self.groups)
        }
        for j, goal in enumerate(measures.GOALS):
            context[f"w_{goal}"] = self.profiles.weights[self.profile, j]
        context.update(
            age_band=self.age_band,
            sex=self.sex,
            tenure_days=self.tenure_days.astype(float),
            local_hour=self.local_hour.astype(float),
            weekday=self.weekday.astype(float),
            trigger=self.trigger,
        )
        if np.isnan(self.profiles.flags).all():  # no group was known: no g_ columns at all
            context = {k: v for k, v in context.items() if not k.startswith("g_")}
        return DecisionLog(
            patients=self.pseudonym,
            time=self.micros / 86_400e6,
            offsets=self.offsets,
            avail=avail.astype(np.int64),
            avail_prob=self.prob,
            avail_true=np.full(len(avail), np.nan),
            action=np.array([-1 if a is None else code[a] for a in self.action], dtype=np.int64),
            propensity=self.propensity,
            none_prob=self.none_prob,
            none_true=np.full(n, np.nan),
            reward=self.reward,
            acted=self.acted,
            health_delta=self.health_delta,
            context=context,
            actions=list(code),
        )

    def records(self) -> Iterator[dict[str, Any]]:
        """One decision-log record per decision, made as they are read."""
        offsets, avail, prob = self.offsets.tolist(), self.avail.tolist(), self.prob.tolist()
        none_prob, action, propensity = (
            self.none_prob.tolist(),
            self.action.tolist(),
            self.propensity.tolist(),
        )
        profile, contexts = self.profile.tolist(), self.profiles.context
        patient, micros = self.pseudonym.tolist(), self.micros.tolist()
        age_band, sex, tenure = self.age_band.tolist(), self.sex.tolist(), self.tenure_days.tolist()
        hour, weekday, trigger = (
            self.local_hour.tolist(),
            self.weekday.tolist(),
            self.trigger.tolist(),
        )
        outcome = _outcome_dicts(self.acted, self.health_delta, self.reward)
        for i in range(len(self)):
            keys = avail[offsets[i] : offsets[i + 1]]
            distribution = dict(zip(keys, prob[offsets[i] : offsets[i + 1]], strict=True))
            distribution[NONE] = none_prob[i]
            yield {
                "patient": patient[i],
                "time": (_EPOCH + micros[i] * _MICROSECOND).isoformat(),
                "available": keys,
                "context": {
                    **contexts[profile[i]],
                    "age_band": age_band[i],
                    "sex": sex[i],
                    "tenure_days": tenure[i],
                    "local_hour": hour[i],
                    "weekday": weekday[i],
                    "trigger": trigger[i],
                },
                "action": action[i],
                "propensity": propensity[i],
                "distribution": distribution,
                "outcome": outcome[i],
            }


def _outcome_dicts(acted: np.ndarray, delta: np.ndarray, reward: np.ndarray) -> list[dict]:
    out: list[dict[str, Any]] = [{} for _ in range(len(acted))]
    for i in np.flatnonzero(np.isfinite(acted)).tolist():
        out[i]["acted"] = bool(acted[i])
    for name, values in (("health_delta", delta), ("reward", reward)):
        for i in np.flatnonzero(np.isfinite(values)).tolist():
            out[i][name] = float(values[i])
    return out
