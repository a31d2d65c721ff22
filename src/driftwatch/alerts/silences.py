"""Silences: operators mute notifications whose labels match, for a while, with who and why (pure).

Matchers are exact label matches (``alertname`` names a rule), like
Alertmanager's ``=`` matchers. Every change goes to the audit hook; state can
be rebuilt from those audit records at start (:meth:`Silences.restore`).

>>> s = Silences(new_id=lambda: "s1")
>>> _ = s.add({"alertname": "complaint_rate_high"}, 3600, "alice", "deploying v9", now=0)
>>> s.is_silenced({"alertname": "complaint_rate_high", "model": "support-router"}, now=10)
True
>>> s.is_silenced({"alertname": "complaint_rate_high"}, now=3600)
False
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from driftwatch._time import epoch, rfc3339
from driftwatch.errors import DriftwatchError

__all__ = ["MAX_DURATION", "Silence", "SilenceError", "SilenceNotFoundError", "Silences"]

MAX_DURATION = 90 * 86400.0
"""The longest silence (90 days): a forgotten silence hides real problems."""

_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MAX_VALUE = 256
_MAX_COMMENT = 1000
_MAX_MATCHERS = 16


class SilenceError(DriftwatchError, ValueError):
    """A silence cannot be created as asked (bad matchers, duration, comment, or too many silences)."""


class SilenceNotFoundError(DriftwatchError, LookupError):
    """No active silence has this id."""


@dataclass(frozen=True, slots=True)
class Silence:
    """One silence: exact label matchers, its time span, and who set it and why."""

    id: str
    matchers: dict[str, str]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every matcher equals the label of the same name."""
        return all(labels.get(k) == v for k, v in self.matchers.items())

    def to_json(self) -> dict[str, object]:
        """The API/audit form: RFC 3339 times."""
        return {
            "id": self.id,
            "matchers": dict(self.matchers),
            "starts_at": rfc3339(self.starts_at),
            "ends_at": rfc3339(self.ends_at),
            "created_by": self.created_by,
            "comment": self.comment,
        }


class Silences:
    """The set of silences; time is passed in, changes are reported to ``audit``."""

    def __init__(
        self,
        audit: Callable[[dict[str, object]], object] | None = None,
        *,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        max_silences: int = 1000,
    ) -> None:
        self._audit = audit
        self._new_id = new_id
        self._max = max_silences
        self._items: dict[str, Silence] = {}

    def add(self, matchers: Mapping[str, str], duration: float, actor: str, comment: str, now: float) -> Silence:
        """Silence alerts whose labels match every matcher for ``duration`` seconds from ``now``."""
        problems = _problems(matchers, duration, comment)
        if problems:
            raise SilenceError("; ".join(problems))
        self._prune(now)
        if len(self._items) >= self._max:
            raise SilenceError(f"too many active silences ({self._max}); remove some first")
        s = Silence(self._new_id(), dict(matchers), now, now + duration, actor, comment)
        self._emit("silence.created", s, actor, now)
        self._items[s.id] = s
        return s

    def remove(self, silence_id: str, actor: str, now: float) -> Silence:
        """End an active silence now; :class:`SilenceNotFoundError` if there is none with this id."""
        s = self._items.get(silence_id)
        if s is None or s.ends_at <= now:
            raise SilenceNotFoundError(f"no active silence {silence_id!r}")
        self._emit("silence.removed", s, actor, now)
        del self._items[silence_id]
        return s

    def is_silenced(self, labels: Mapping[str, str], now: float) -> bool:
        """Whether an active silence matches ``labels`` at ``now``."""
        return any(s.starts_at <= now < s.ends_at and s.matches(labels) for s in self._items.values())

    def active(self, now: float) -> list[Silence]:
        """Silences in force at ``now``, oldest first."""
        self._prune(now)
        return sorted(self._items.values(), key=lambda s: (s.starts_at, s.id))

    def restore(self, records: Iterable[Mapping[str, object]], now: float) -> int:
        """Rebuild from audit records (``silence.created`` / ``silence.removed``); return how many are active."""
        for rec in records:
            kind, inputs = rec.get("kind"), rec.get("inputs")
            if not isinstance(inputs, Mapping):
                continue
            sid = inputs.get("id")
            if not isinstance(sid, str):
                continue
            if kind == "silence.removed":
                self._items.pop(sid, None)
            elif kind == "silence.created":
                matchers, starts, ends = (
                    inputs.get("matchers"),
                    epoch(inputs.get("starts_at")),
                    epoch(inputs.get("ends_at")),
                )
                if not isinstance(matchers, Mapping) or starts is None or ends is None:
                    continue
                self._items[sid] = Silence(
                    sid,
                    {str(k): str(v) for k, v in matchers.items()},
                    starts,
                    ends,
                    str(inputs.get("created_by", "")),
                    str(inputs.get("comment", "")),
                )
        return len(self.active(now))

    def _prune(self, now: float) -> None:
        for sid in [sid for sid, s in self._items.items() if s.ends_at <= now]:
            del self._items[sid]

    def _emit(self, kind: str, s: Silence, actor: str, now: float) -> None:
        if self._audit is not None:
            self._audit(
                {
                    "kind": kind,
                    "time": rfc3339(now),
                    "actor": actor,
                    "rule": s.matchers.get("alertname"),
                    "labels": dict(s.matchers),
                    "inputs": s.to_json(),
                    "outcome": "ok",
                }
            )


def _problems(matchers: Mapping[str, str], duration: float, comment: str) -> list[str]:
    out: list[str] = []
    if not isinstance(matchers, Mapping) or not matchers:
        out.append("matchers: give at least one label=value matcher")
    elif len(matchers) > _MAX_MATCHERS:
        out.append(f"matchers: at most {_MAX_MATCHERS}")
    else:
        for k, v in matchers.items():
            if not isinstance(k, str) or not _LABEL.match(k):
                out.append(f"matchers: label name {k!r} must match {_LABEL.pattern}")
            if not isinstance(v, str) or not 0 < len(v) <= _MAX_VALUE:
                out.append(f"matchers.{k}: value must be a string of 1 to {_MAX_VALUE} characters")
    if isinstance(duration, bool) or not isinstance(duration, int | float) or not math.isfinite(duration):
        out.append("duration: must be a number of seconds or like '30m'")
    elif not 0 < duration <= MAX_DURATION:
        out.append(f"duration: must be more than 0 and at most {int(MAX_DURATION // 86400)}d")
    if not isinstance(comment, str) or not comment.strip() or len(comment) > _MAX_COMMENT:
        out.append(f"comment: say why, in 1 to {_MAX_COMMENT} characters")
    return out
