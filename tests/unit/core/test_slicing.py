"""Tests for pseudonymisation, value coding and slice rows in `driftwatch.core.slicing`."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from driftwatch.config import AttributeConfig, Config
from driftwatch.core.slicing import (
    MEMO_FACTOR,
    OTHER,
    OVERALL,
    AttributeCoder,
    Pseudonymizer,
    SliceSpace,
    coders_from_config,
)

KEY = b"0123456789abcdef0123"
TOKEN = re.compile(r"^h:[0-9a-f]{16}$")


def test_pseudonymizer_is_stable_and_formatted() -> None:
    """The same key, attribute and value always give the same 'h:' + 16 hex token."""
    a, b = Pseudonymizer(KEY), Pseudonymizer(KEY)
    tok = a.token("age_band", "65+")
    assert TOKEN.match(tok)
    assert tok == a.token("age_band", "65+") == b.token("age_band", "65+")
    expected = "h:" + hmac.new(KEY, b"age_band\x0065+", hashlib.sha256).hexdigest()[:16]
    assert tok == expected


def test_pseudonymizer_depends_on_key_value_and_attribute() -> None:
    """Tokens change with the key, the value and the attribute name (no linking across attributes)."""
    p = Pseudonymizer(KEY)
    base = p.token("age_band", "65+")
    assert Pseudonymizer(b"another-key-16-bytes").token("age_band", "65+") != base
    assert p.token("age_band", "18-24") != base
    assert p.token("language", "65+") != base


def test_pseudonymizer_rejects_short_key() -> None:
    """A key shorter than 16 bytes is refused."""
    with pytest.raises(ValueError, match="16 bytes"):
        Pseudonymizer(b"short")
    Pseudonymizer(b"x" * 16)


def test_coder_answers_the_same_past_its_memo_and_keeps_it_bounded() -> None:
    """The coder is a pure function of the config: past its memo of MEMO_FACTOR x max_values answers a new valid value still passes (admission by volume happens at ingest), and the memo never grows past its limit."""
    coder = AttributeCoder("region", AttributeConfig(max_values=2), None)
    assert coder.limit == MEMO_FACTOR * 2
    values = [f"r{i}" for i in range(3 * coder.limit)]
    assert [coder.code(v) for v in values] == values
    assert coder.code("r0") == "r0"
    assert coder.folded == 0
    assert len(coder._cache) <= coder.limit
    assert coder.code("+15550100") == OTHER
    assert coder.code("+15550100") == OTHER  # not remembered, counted again
    assert coder.folded == 2


def test_coder_vocabulary_folds_unknown_values() -> None:
    """With a vocabulary, values outside it fold into __other__ and values inside pass through."""
    coder = AttributeCoder("channel", AttributeConfig(values=("web", "app")), None)
    assert coder.code("web") == "web"
    assert coder.code("app") == "app"
    assert coder.code("fax") == OTHER
    assert coder.folded == 1


@pytest.mark.parametrize("raw", ["has space", "é", "x" * 65, "semi;colon", "", 'quote"s', "EU\n", "line\nbreak"])
def test_coder_folds_invalid_label_characters(raw: str) -> None:
    """Values that are not safe metric labels fold into __other__."""
    coder = AttributeCoder("region", AttributeConfig(), None)
    assert coder.code(raw) == OTHER
    assert coder.folded == 1


def test_coder_keeps_valid_label_characters() -> None:
    """Values made of the allowed label characters pass through unchanged."""
    coder = AttributeCoder("region", AttributeConfig(), None)
    for raw in ("EU", "us-east-1", "a.b:c+d_e", "x" * 64):
        assert coder.code(raw) == raw
    assert coder.folded == 0


@pytest.mark.parametrize(
    "raw", ["+15550100123", "555-0100-99", "4111111111111111", "10.20.30.40", "cust-8f3a9b2c1d0e", "1985-04-12"]
)
def test_coder_folds_values_that_look_like_personal_data(raw: str) -> None:
    """Phone, card and account numbers, IP addresses, ids and exact dates never become labels, even if well formed."""
    coder = AttributeCoder("region", AttributeConfig(), None)
    assert coder.code(raw) == OTHER
    assert coder.folded == 1


def test_operator_named_values_pass_even_if_they_look_personal() -> None:
    """A value the config lists (vocabulary or display values) is the operator's choice and stays a label."""
    coder = AttributeCoder("postcode", AttributeConfig(values=("10115", "75001")), None)
    assert coder.code("10115") == "10115"
    assert coder.code("99999") == OTHER


def test_sensitive_coder_tokenises_and_passes_tokens_through() -> None:
    """A sensitive attribute's raw values become tokens; a value that already is a token passes unchanged."""
    p = Pseudonymizer(KEY)
    coder = AttributeCoder("age_band", AttributeConfig(sensitive=True), p)
    assert coder.code("65+") == p.token("age_band", "65+")
    pre = "h:0123456789abcdef"
    assert coder.code(pre) == pre
    # values that merely look similar are tokenised, not passed through
    assert coder.code(pre + "\n") == p.token("age_band", pre + "\n")
    assert coder.code("h:0123") == p.token("age_band", "h:0123")


def test_sensitive_coder_display_values_map_tokens_to_names() -> None:
    """display_values of a sensitive attribute map their tokens back to the raw names for dashboards."""
    p = Pseudonymizer(KEY)
    coder = AttributeCoder("age_band", AttributeConfig(sensitive=True, display_values=("65+", "18-24")), p)
    assert coder.display == {p.token("age_band", "65+"): "65+", p.token("age_band", "18-24"): "18-24"}


def _config(sensitive: bool) -> Config:
    return Config.model_validate(
        {
            "attributes": {"region": {}, "age_band": {"sensitive": sensitive}},
            "models": {"m": {"favorable": ["yes"], "reference": {"learn_events": 100}}},
        }
    )


def test_coders_from_config_requires_key_for_sensitive_attribute() -> None:
    """Building coders for a config with a sensitive attribute and no key raises ValueError."""
    with pytest.raises(ValueError, match="age_band"):
        coders_from_config(_config(True), None)
    coders = coders_from_config(_config(True), KEY)
    assert set(coders) == {"region", "age_band"}
    assert TOKEN.match(coders["age_band"].code("65+"))
    assert set(coders_from_config(_config(False), None)) == {"region", "age_band"}


def test_slice_space_assigns_rows_in_order_of_appearance() -> None:
    """Row 0 is the whole model; new values get the next row and repeated values their old row."""
    space = SliceSpace(("region", "channel"), (10, 10))
    assert len(space) == 1
    assert space.keys == [(OVERALL, OVERALL)]
    assert space.row(0, "EU") == 1
    assert space.row(1, "web") == 2
    assert space.row(0, "US") == 3
    assert space.row(0, "EU") == 1
    assert space.rows_by_dim == [[1, 3], [2]]
    assert space.find(("region", "US")) == 3
    assert space.find(("region", "XX")) is None
    assert space.find((OVERALL, OVERALL)) == 0
    assert len(space) == 4


def test_slice_space_folds_values_past_the_dimension_limit() -> None:
    """Once a dimension holds its limit of rows, further values share the dimension's __other__ row."""
    space = SliceSpace(("region", "channel"), (2, 5))
    r1, r2 = space.row(0, "a"), space.row(0, "b")
    other = space.row(0, "c")
    assert other not in (r1, r2)
    assert space.keys[other] == ("region", OTHER)
    assert space.row(0, "d") == other
    assert space.row(0, OTHER) == other
    assert space.row(0, "a") == r1
    # the other dimension is unaffected
    assert space.keys[space.row(1, "c")] == ("channel", "c")
    assert space.rows_by_dim[0] == [r1, r2, other]
