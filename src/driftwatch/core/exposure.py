"""Exposure: which slice values are shown by name in a window (top-k, at least k members), the rest folded.

A value is exposed only when it is among the ``max_values`` largest of its
dimension in the window and has at least ``privacy.min_group_size`` members;
everything else, including values folded at ingest, is merged into
``__other__``, itself withheld when it has fewer than k members. Rules,
reports and /metrics all read slices through :class:`Exposure`, so what is
alerted on is what is shown.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from driftwatch.config import Config
from driftwatch.core import summary as S
from driftwatch.core.slicing import OTHER, AttributeCoder, SliceSpace

__all__ = ["Cache", "Exposure", "Stream"]

Cache = dict[tuple[int, int, int], tuple[list[str], S.Matrix]]
"""Exposed values and their summaries by (stream, window ticks, dimension), shared within one evaluation."""


class Stream:
    """Evaluation state of one model x version: slice rows by name and the window store."""

    __slots__ = ("layout", "model_id", "space", "store", "version")

    def __init__(
        self, model_id: str, version: str, layout: S.Layout, space: SliceSpace, window_ticks: tuple[int, ...]
    ) -> None:
        self.model_id = model_id
        self.version = version
        self.layout = layout
        self.space = space
        self.store = S.WindowStore(window_ticks)


class Exposure:
    """Applies the top-k and k-anonymity rules to a stream's slices in a window."""

    def __init__(self, config: Config, coders: Mapping[str, AttributeCoder]) -> None:
        self.config = config
        self.coders = coders
        self.dimensions = config.dimensions()
        self.attrs = tuple(config.attributes)

    def exposed(self, s: Stream, wt: int, dim: int, cache: Cache | None = None) -> tuple[list[str], S.Matrix]:
        """Values of dimension ``dim`` shown by name in window ``wt`` (top-k, >= k members) and their summaries.

        Everything else, including values folded at ingest, is merged into
        ``__other__``, itself withheld when it has fewer than k members.
        """
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
        result = (out_names, np.array(parts, np.int64).reshape(len(parts), s.layout.width))
        if cache is not None:
            cache[key] = result
        return result

    def value_token(self, dim: str, value: str | None) -> str | None:
        """The exposed form of a configured value: its pseudonymous token where the attribute is sensitive."""
        if value is None or ":" in dim:
            return value
        coder = self.coders[dim]
        if coder.config.sensitive and coder.pseudonymizer is not None:
            return coder.pseudonymizer.token(dim, value)
        return value

    def display(self, attribute: str, value: str) -> str:
        """The display name of an exposed value where the operator allowed one; else the value itself."""
        coder = self.coders.get(attribute)
        return coder.display.get(value, value) if coder is not None else value
