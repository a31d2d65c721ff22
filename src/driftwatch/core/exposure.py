"""Exposure: which slice values are shown by name in a window (top-k, at least k members), the rest folded.

A value is exposed only when it is among the ``max_values`` largest of its
dimension in the window and has at least ``privacy.min_group_size`` members;
everything else, including values folded at ingest, is merged into
``__other__``, itself withheld when it has fewer than k members. Rules,
reports and /metrics all read slices through :class:`Exposure`, so what is
alerted on is what is shown.

It also decides the name a person reads: an exposed token of a sensitive
attribute whose raw value the config lists in ``display_values`` is shown as
that raw value (in metric rows, /metrics labels, alert labels and evidence,
and so in webhooks and the audit); each side of a pair ``a:b`` is named the
same way. Every other sensitive value stays a token, and a group below
``min_group_size`` is never named at all (it is folded before naming).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from driftwatch.config import Config
from driftwatch.core import summary as S
from driftwatch.core.sample import TickSample
from driftwatch.core.slicing import OTHER, TOKEN_LENGTH, AttributeCoder, SliceKey, SliceSpace

__all__ = ["Cache", "Exposure", "Stream"]

Cache = dict[tuple[int, int, int], tuple[list[str], list[str], S.Matrix]]
"""Exposed slice values, their shown names and summaries by (stream, window ticks, dimension), shared within one
evaluation."""

_MAX_LABEL = 64
"""Longest label value; a pair whose shown name would be longer keeps its tokens (see :meth:`Exposure.shown`)."""


class Stream:
    """Evaluation state of one model x version: slice rows by name and the window store."""

    __slots__ = ("layout", "model_id", "remaps", "samples", "space", "store", "version")

    def __init__(
        self, model_id: str, version: str, layout: S.Layout, space: SliceSpace, window_ticks: tuple[int, ...]
    ) -> None:
        self.model_id = model_id
        self.version = version
        self.layout = layout
        self.space = space
        self.store = S.WindowStore(window_ticks)
        # tick -> sampled prediction rows, for reports (ticks of the longest window; never checkpointed).
        self.samples: dict[int, TickSample] = {}
        # Another ingest process's slice order -> (space.renames then, our row of each of its rows or -1): see
        # Evaluator.apply. A few orders at a time (an ingest process's order grows as values come).
        self.remaps: dict[tuple[SliceKey, ...], tuple[int, NDArray[np.int64]]] = {}


class Exposure:
    """Applies the top-k and k-anonymity rules to a stream's slices in a window."""

    def __init__(self, config: Config, coders: Mapping[str, AttributeCoder]) -> None:
        self.config = config
        self.coders = coders
        self.dimensions = config.dimensions()
        self.attrs = tuple(config.attributes)

    def exposed(self, s: Stream, wt: int, dim: int, cache: Cache | None = None) -> tuple[list[str], S.Matrix]:
        """Names of the values of dimension ``dim`` shown in window ``wt`` (top-k, >= k members) and their summaries.

        Everything else, including values folded at ingest, is merged into
        ``__other__``, itself withheld when it has fewer than k members. A
        name is the value's display name where the config allows one (see
        :meth:`shown`), else the value itself (a token where sensitive).
        """
        _, shown, m = self.exposed_keys(s, wt, dim, cache)
        return shown, m

    def exposed_keys(
        self, s: Stream, wt: int, dim: int, cache: Cache | None = None
    ) -> tuple[list[str], list[str], S.Matrix]:
        """Like :meth:`exposed`, with each exposed value's slice value first (its key in the stream's slice space)."""
        key = (id(s), wt, dim)
        if cache is not None and key in cache:
            return cache[key]
        rows = s.space.rows_by_dim[dim]
        m = s.store.window(wt, len(s.space), s.layout.width)
        names = [s.space.keys[r][1] for r in rows]
        sub = m[rows] if rows else np.zeros((0, s.layout.width), np.int64)
        n = sub[:, S.N_PRED] if len(rows) else np.zeros(0, np.int64)
        dim_name = self.dimensions[dim]
        if dim < len(self.attrs):
            k_top = self.config.attributes[dim_name].max_values
        else:
            a, b = dim_name.split(":")
            k_top = max(self.config.attributes[a].max_values, self.config.attributes[b].max_values)
        k_min = self.config.privacy.min_group_size
        order = sorted(range(len(rows)), key=lambda i: (-int(n[i]), names[i]))
        shown = [i for i in order if names[i] != OTHER and n[i] >= k_min][:k_top]
        rest = [i for i in range(len(rows)) if i not in set(shown)]
        out_names = [names[i] for i in shown]
        parts = [sub[i] for i in shown]
        if rest:
            other = sub[rest].sum(axis=0)
            if other[S.N_PRED] >= k_min:
                out_names.append(OTHER)
                parts.append(other)
        result = (
            out_names,
            [self.shown(dim_name, nm) for nm in out_names],
            np.array(parts, np.int64).reshape(len(parts), s.layout.width),
        )
        if cache is not None:
            cache[key] = result
        return result

    def shown(self, dim: str, value: str) -> str:
        """The name shown for an exposed slice value of dimension ``dim``.

        A token whose raw value is in the attribute's ``display_values`` is
        shown as that raw value; in a pair ``a:b`` each side is named so (a
        pair whose shown name would exceed 64 characters keeps its tokens).
        Anything else, ``__other__`` included, is shown as it is. Only call
        this on values :meth:`exposed_keys` exposed: it is what keeps groups
        below ``min_group_size`` unnamed.
        """
        if value == OTHER:
            return value
        if ":" not in dim:
            return self.display(dim, value)
        a, b = dim.split(":")
        ca, cb = self.coders.get(a), self.coders.get(b)
        # A sensitive side is a token of fixed length, which tells where the sides meet.
        if cb is not None and cb.display and len(value) > TOKEN_LENGTH and value[-TOKEN_LENGTH - 1] == ":":
            va, vb = value[: -TOKEN_LENGTH - 1], value[-TOKEN_LENGTH:]
        elif ca is not None and ca.display and len(value) > TOKEN_LENGTH and value[TOKEN_LENGTH] == ":":
            va, vb = value[:TOKEN_LENGTH], value[TOKEN_LENGTH + 1 :]
        else:
            return value
        pair = f"{self.display(a, va)}:{self.display(b, vb)}"
        return pair if len(pair) <= _MAX_LABEL else value

    def shown_value(self, dim: str, value: str | None) -> str | None:
        """The shown name of a raw value named in the config (a rule's ``value``), to compare with exposed names.

        A sensitive attribute's value becomes its token, then its display
        name where listed; a pair's value is compared as written (its sides
        as shown, e.g. ``18-24:de``).
        """
        if value is None or ":" in dim:
            return value
        coder = self.coders[dim]
        if coder.config.sensitive and coder.pseudonymizer is not None:
            return self.display(dim, coder.pseudonymizer.token(dim, value))
        return value

    def display(self, attribute: str, value: str) -> str:
        """The display name of a token of ``attribute`` where the operator allowed one; else the value itself."""
        coder = self.coders.get(attribute)
        return coder.display.get(value, value) if coder is not None else value
