"""Pure: the decision-log format (docs/decision-log.md), JSON Lines, one decision point per
line. Reading validates every line and refuses the whole file on any error, naming the line
and the reason; writing produces the same format. The in-memory form, `DecisionLog`, keeps the
variable-length parts (the available actions, their probabilities, their true values) as
flat arrays with offsets, so training and evaluation stay vectorised."""

import datetime as dt
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

NONE = "__none__"  # the "no nudge" action in distributions and true values
REQUIRED = ("patient", "time", "available", "action", "propensity")
OPTIONAL = ("context", "distribution", "outcome", "true_values")
OUTCOME_FIELDS = ("reward", "acted", "health_delta")
MAX_ERRORS = 20


class LogError(ValueError):
    """The file is refused: `errors` lists (line number, reason), the first MAX_ERRORS."""

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        self.errors = errors
        shown = "; ".join(f"line {n}: {reason}" for n, reason in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{len(errors)} invalid line(s), nothing read: {shown}{more}")


@dataclass
class DecisionLog:
    """Decision points in file order. Action ids are indices into `actions` (-1: none).
    Per decision i, its available actions are avail[offsets[i]:offsets[i+1]], with the
    logging policy's probabilities in avail_prob (NaN when the log did not give them) and
    the true expected rewards in avail_true (NaN when unknown); none_prob and none_true
    are the same for "no nudge"."""

    patients: np.ndarray  # (n,) object: patient ids as given (or pseudonyms)
    time: np.ndarray  # (n,) float: days since the Unix epoch
    offsets: np.ndarray  # (n + 1,)
    avail: np.ndarray  # (k,) action indices
    avail_prob: np.ndarray  # (k,)
    avail_true: np.ndarray  # (k,)
    action: np.ndarray  # (n,) int, -1 for no nudge
    propensity: np.ndarray  # (n,)
    none_prob: np.ndarray  # (n,) NaN when unknown
    none_true: np.ndarray  # (n,) NaN when unknown
    reward: np.ndarray  # (n,) NaN when unknown
    acted: np.ndarray  # (n,) float 0/1, NaN when unknown
    health_delta: np.ndarray  # (n,) NaN when unknown
    context: dict[str, np.ndarray]  # name -> (n,) float or object array
    actions: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.action)

    @property
    def has_true_values(self) -> bool:
        return bool(np.isfinite(self.none_true).any())

    def rows_of(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def decision_index(self) -> np.ndarray:
        """(k,) the decision each entry of `avail` belongs to."""
        return np.repeat(np.arange(len(self)), np.diff(self.offsets))

    def select(self, rows: np.ndarray) -> "DecisionLog":
        """The log restricted to the decisions `rows` (sorted indices)."""
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        take = np.arange(offsets[-1]) - np.repeat(offsets[:-1] - starts, lengths)
        return DecisionLog(
            patients=self.patients[rows],
            time=self.time[rows],
            offsets=offsets,
            avail=self.avail[take],
            avail_prob=self.avail_prob[take],
            avail_true=self.avail_true[take],
            action=self.action[rows],
            propensity=self.propensity[rows],
            none_prob=self.none_prob[rows],
            none_true=self.none_true[rows],
            reward=self.reward[rows],
            acted=self.acted[rows],
            health_delta=self.health_delta[rows],
            context={k: v[rows] for k, v in self.context.items()},
            actions=self.actions,
        )


def _days(text: Any) -> float:
    moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("time needs a UTC offset")
    return moment.timestamp() / 86400.0


def _probability(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 < value <= 1.0


def _check(record: Any) -> str | None:
    """Why this line is invalid, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    unknown = sorted(set(record) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        return f"unknown field(s): {', '.join(unknown)}"
    missing = [name for name in REQUIRED if name not in record]
    if missing:
        return f"missing field(s): {', '.join(missing)}"
    if not isinstance(record["patient"], str) or not record["patient"]:
        return "patient must be a non-empty string"
    try:
        _days(record["time"])
    except (TypeError, ValueError):
        return "time must be an ISO 8601 time with a UTC offset"
    available = record["available"]
    if not isinstance(available, list) or not all(isinstance(a, str) and a for a in available):
        return "available must be a list of action ids (strings)"
    if len(set(available)) != len(available) or NONE in available:
        return "available repeats an action or names the reserved id __none__"
    action = record["action"]
    if action is not None and action not in available:
        return "action is neither null nor one of the available actions"
    if not _probability(record["propensity"]):
        return "propensity must be a number in (0, 1]"
    context = record.get("context", {})
    if not isinstance(context, dict) or not all(
        isinstance(v, str)
        or (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v))
        for v in context.values()
    ):
        return "context must map names to finite numbers or strings"
    for name in ("distribution", "true_values"):
        problem = _check_per_action(record.get(name), available, name)
        if problem:
            return problem
    distribution = record.get("distribution")
    if distribution is not None:
        if abs(sum(distribution.values()) - 1.0) > 1e-3:
            return "distribution must sum to 1"
        chosen = distribution.get(action if action is not None else NONE, 0.0)
        if abs(chosen - record["propensity"]) > 1e-6 + 1e-3 * record["propensity"]:
            return "propensity differs from the distribution's probability of the action"
    outcome = record.get("outcome", {})
    if not isinstance(outcome, dict) or set(outcome) - set(OUTCOME_FIELDS):
        return f"outcome must be an object with {', '.join(OUTCOME_FIELDS)}"
    for name in ("reward", "health_delta"):
        value = outcome.get(name)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            return f"outcome.{name} must be a finite number"
    if "acted" in outcome and not isinstance(outcome["acted"], bool):
        return "outcome.acted must be true or false"
    return None


def _check_per_action(values: Any, available: list[str], name: str) -> str | None:
    if values is None:
        return None
    if not isinstance(values, dict) or set(values) - set(available) - {NONE}:
        return f"{name} may name only available actions and {NONE}"
    for value in values.values():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            return f"{name} must map actions to finite numbers"
        if name == "distribution" and not 0.0 <= value <= 1.0:
            return "distribution probabilities must lie in [0, 1]"
    return None


def read_lines(lines: Iterable[bytes | str]) -> DecisionLog:
    """Parse and validate every line; raise LogError naming the bad lines (nothing is read
    from a file with any bad line). Blank lines are skipped."""
    records: list[dict] = []
    errors: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            errors.append((number, "not valid JSON"))
            continue
        problem = _check(record)
        if problem:
            errors.append((number, problem))
        elif not errors:
            records.append(record)
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        raise LogError(errors)
    return from_records(records)


def from_records(records: Sequence[Mapping[str, Any]]) -> DecisionLog:
    """Validated records (or records written by this project) into a DecisionLog."""
    vocabulary: dict[str, int] = {}
    n = len(records)
    lengths = np.array([len(r["available"]) for r in records], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    avail = np.empty(int(offsets[-1]), dtype=np.int64)
    avail_prob = np.full(len(avail), np.nan)
    avail_true = np.full(len(avail), np.nan)
    out = {
        name: np.full(n, np.nan)
        for name in ("propensity", "none_prob", "none_true", "reward", "acted", "health_delta")
    }
    action = np.full(n, -1, dtype=np.int64)
    time = np.empty(n)
    context_keys = sorted({key for r in records for key in r.get("context", {})})
    context: dict[str, list] = {key: [None] * n for key in context_keys}
    for i, r in enumerate(records):
        start = offsets[i]
        distribution = r.get("distribution") or {}
        true_values = r.get("true_values") or {}
        for j, name in enumerate(r["available"]):
            code = vocabulary.setdefault(name, len(vocabulary))
            avail[start + j] = code
            avail_prob[start + j] = distribution.get(name, np.nan)
            avail_true[start + j] = true_values.get(name, np.nan)
        out["none_prob"][i] = distribution.get(NONE, np.nan)
        out["none_true"][i] = true_values.get(NONE, np.nan)
        if r["action"] is not None:
            action[i] = vocabulary[r["action"]]
        out["propensity"][i] = r["propensity"]
        outcome = r.get("outcome") or {}
        for name in ("reward", "health_delta"):
            if outcome.get(name) is not None:
                out[name][i] = outcome[name]
        if "acted" in outcome:
            out["acted"][i] = float(outcome["acted"])
        time[i] = _days(r["time"])
        for key, value in r.get("context", {}).items():
            context[key][i] = value
    columns = {key: _column(values) for key, values in context.items()}
    return DecisionLog(
        patients=np.array([r["patient"] for r in records], dtype=object),
        time=time,
        offsets=offsets,
        avail=avail,
        avail_prob=avail_prob,
        avail_true=avail_true,
        action=action,
        propensity=out["propensity"],
        none_prob=out["none_prob"],
        none_true=out["none_true"],
        reward=out["reward"],
        acted=out["acted"],
        health_delta=out["health_delta"],
        context=columns,
        actions=list(vocabulary),
    )


def _column(values: list) -> np.ndarray:
    """Numbers become a float column (NaN where absent); anything else an object column."""
    if all(v is None or isinstance(v, int | float) for v in values):
        return np.array([np.nan if v is None else float(v) for v in values])
    return np.array(values, dtype=object)


def dumps(record: Mapping[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


def iter_lines(path: Any) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from handle
