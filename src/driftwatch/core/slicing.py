"""Slice keys, pseudonymisation of attribute values, and the cardinality cap.

A *slice* is a model x version x (dimension, value), where a dimension is a
configured attribute or a configured pair ``a:b``; the whole model is the
slice ``("*", "*")``. Values that may reach a metric label pass through here
first:

- sensitive attributes become keyed HMAC-SHA256 tokens (``h:`` + 16 hex);
- values outside the vocabulary, not matching :data:`LABEL_VALUE`, or that
  look like personal data (:func:`looks_personal`: phone numbers, account
  numbers, IP addresses, long identifiers) fold into ``__other__``, unless
  the config lists them (``values`` or ``display_values``);
- each stream tracks a bounded number of distinct values per dimension, kept
  by recent volume at ingest (the others fold into ``__other__`` and are
  counted; see ``driftwatch.core.ingest``), and the exposure layer then keeps
  only the top-k by frequency in each window.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Final

from driftwatch.config import AttributeConfig, Config

__all__ = [
    "LABEL_VALUE",
    "MISSING",
    "OTHER",
    "OVERALL",
    "TOKEN",
    "TOKEN_LENGTH",
    "AttributeCoder",
    "Pseudonymizer",
    "SliceKey",
    "SliceSpace",
    "coders_from_config",
    "looks_personal",
]

OTHER: Final = "__other__"
OVERALL: Final = "*"
MISSING: Final = -1
"""Row code for an event without a value for a dimension: it joins no slice of that dimension."""
LABEL_VALUE: Final = re.compile(r"^[A-Za-z0-9_.:+-]{1,64}$")
TOKEN: Final = re.compile(r"^h:[0-9a-f]{16}$")
TOKEN_LENGTH: Final = 18
"""Length of a token (``h:`` + 16 hex): where the sides of a pair value meet when one side is sensitive."""
_DIGITS: Final = re.compile(r"\d")
_IPV4: Final = re.compile(r"\d{1,3}([.-]\d{1,3}){3}")
_ID_RUN: Final = re.compile(r"(?=[0-9A-Fa-f]*\d)(?=[0-9A-Fa-f]*[A-Fa-f])[0-9A-Fa-f]{12,}")
MAX_DIGITS: Final = 4
"""A value with more digits than this looks like a phone, account or customer number and is never a label."""
TRACK_FACTOR: Final = 4
"""Each dimension tracks up to ``TRACK_FACTOR x max_values`` distinct values so top-k can change over time."""
MEMO_FACTOR: Final = 16
"""An attribute's coder remembers the answers for up to ``MEMO_FACTOR x max_values`` raw values, then starts over."""


def looks_personal(value: str) -> bool:
    """Whether a value looks like personal data rather than a segment name.

    More than :data:`MAX_DIGITS` digits (phone, account, customer and card
    numbers, exact dates), an IPv4 address, or a run of 12 or more hex
    characters mixing letters and digits (ids, UUIDs, hashes). Segment names
    (``EU``, ``en``, ``chat``, ``18-24``, ``65+``) are none of these.

    >>> [looks_personal(v) for v in ("EU", "18-24", "v2", "+15550100", "10.1.2.3", "c0ffee00beef42", "2024")]
    [False, False, False, True, True, True, False]
    """
    return (
        len(_DIGITS.findall(value)) > MAX_DIGITS or _IPV4.search(value) is not None or _ID_RUN.search(value) is not None
    )


class Pseudonymizer:
    """Keyed HMAC-SHA256 tokens for sensitive values; the same key gives the same token everywhere.

    >>> p = Pseudonymizer(b"0123456789abcdef")
    >>> tok = p.token("age_band", "65+")
    >>> tok.startswith("h:") and len(tok) == 18 and tok == p.token("age_band", "65+")
    True
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("pseudonymisation key must be at least 16 bytes")
        self._key = key

    def token(self, attribute: str, value: str) -> str:
        """Return the stable token of ``value``; the attribute name is mixed in so tokens do not link across attributes."""
        mac = hmac.new(self._key, f"{attribute}\x00{value}".encode(), hashlib.sha256)
        return "h:" + mac.hexdigest()[:16]


@dataclass(slots=True)
class AttributeCoder:
    """Maps one attribute's raw values to exposed values (token, vocabulary, cap), caching the answers."""

    name: str
    config: AttributeConfig
    pseudonymizer: Pseudonymizer | None
    display: dict[str, str] = field(default_factory=dict)
    folded: int = 0
    _cache: dict[str, str] = field(default_factory=dict)
    _vocabulary: frozenset[str] | None = None
    _allowed: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.config.values is not None:
            self._vocabulary = frozenset(self.config.values)
        # Values the operator named may be labels even if they look personal (a region code like "10115").
        self._allowed = frozenset((*(self.config.values or ()), *self.config.display_values))
        if self.config.sensitive:
            if self.pseudonymizer is None:
                raise ValueError(f"attribute {self.name!r} is sensitive but no pseudonymisation key was given")
            for raw in self.config.display_values:
                self.display[self.pseudonymizer.token(self.name, raw)] = raw

    @property
    def limit(self) -> int:
        """How many answers are remembered (a memo only: the answer for a raw value never changes)."""
        return MEMO_FACTOR * self.config.max_values

    def code(self, raw: str) -> str:
        """Return the value ``raw`` may be shown as: a token, itself, or ``__other__`` (counted).

        A pure function of the config: which values get a slice row of their own is decided by recent volume at
        ingest, not here.
        """
        hit = self._cache.get(raw)
        if hit is not None:
            return hit
        value: str
        if self._vocabulary is not None and raw not in self._vocabulary:
            value = OTHER
        elif self.config.sensitive:
            assert self.pseudonymizer is not None
            # A producer that pseudonymised at the source with the shared key sends tokens already.
            value = raw if TOKEN.fullmatch(raw) else self.pseudonymizer.token(self.name, raw)
        elif LABEL_VALUE.fullmatch(raw) and (raw in self._allowed or not looks_personal(raw)):
            value = raw
        else:
            value = OTHER
        if value == OTHER:
            self.folded += 1
            return OTHER  # not remembered: a flood of distinct values must not grow memory
        if len(self._cache) >= self.limit:
            self._cache.clear()  # a flood of valid values: start over rather than keep the first ones forever
        self._cache[raw] = value
        return value


def coders_from_config(config: Config, key: bytes | None) -> dict[str, AttributeCoder]:
    """Build one coder per configured attribute; sensitive attributes need ``key``."""
    pseudo = Pseudonymizer(key) if key is not None else None
    return {name: AttributeCoder(name, ac, pseudo) for name, ac in config.attributes.items()}


SliceKey = tuple[str, str]
"""(dimension, value): ``("*", "*")`` is the whole model, ``("region", "EU")``, ``("age_band:language", "h:..:de")``."""


class SliceSpace:
    """Row numbers of the slices of one model x version, assigned as values appear (row 0 is the whole model).

    ``limits``: rows per dimension, ``__other__`` included, past which a new value folds into ``__other__`` (None:
    the caller bounds them, as ingest does by admission).
    """

    __slots__ = ("_index", "dimensions", "keys", "limits", "renames", "rows_by_dim")

    def __init__(self, dimensions: tuple[str, ...], limits: tuple[int, ...] | None = None) -> None:
        self.dimensions = dimensions
        self.limits = limits
        self.keys: list[SliceKey] = [(OVERALL, OVERALL)]
        self._index: dict[SliceKey, int] = {(OVERALL, OVERALL): 0}
        self.rows_by_dim: list[list[int]] = [[] for _ in dimensions]
        self.renames = 0  # how many rows went to another value: the only way a key's row ever changes

    def __len__(self) -> int:
        return len(self.keys)

    def row(self, dim: int, value: str) -> int:
        """Row of (dimension, value); past the dimension's limit the value folds into ``__other__``."""
        key = (self.dimensions[dim], value)
        found = self._index.get(key)
        if found is not None:
            return found
        if value != OTHER and self.full(dim):
            return self.row(dim, OTHER)
        r = len(self.keys)
        self.keys.append(key)
        self._index[key] = r
        self.rows_by_dim[dim].append(r)
        return r

    def full(self, dim: int) -> bool:
        """Whether a new value of dimension ``dim`` would fold into ``__other__``."""
        return self.limits is not None and len(self.rows_by_dim[dim]) >= self.limits[dim]

    def rename(self, row: int, value: str) -> None:
        """Give ``row`` (of a value, not the whole model) to another value of its dimension."""
        dim, old = self.keys[row]
        del self._index[(dim, old)]
        self.keys[row] = (dim, value)
        self._index[(dim, value)] = row
        self.renames += 1

    def row_of(self, key: SliceKey) -> int:
        """Row of a slice named by key, assigned if new (``("*", "*")`` is row 0)."""
        found = self._index.get(key)
        if found is not None:
            return found
        return self.row(self.dimensions.index(key[0]), key[1])

    def find(self, key: SliceKey) -> int | None:
        """Row of a slice key, or None if never seen."""
        return self._index.get(key)
