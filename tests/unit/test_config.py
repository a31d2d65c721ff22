"""Tests for configuration loading, cross-object checks and key loading in `driftwatch.config`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from driftwatch.config import Config, PrivacyConfig, Rule, load_config, load_key
from driftwatch.errors import ConfigError, SecretMissingError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "driftwatch.example.yaml"
KEY_ENV = "DRIFTWATCH_TEST_PSEUDONYM_KEY"


def write(tmp_path: Path, text: str, name: str = "driftwatch.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_example_config_loads_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped example config validates and needs no pseudonymisation key to load."""
    monkeypatch.delenv("DRIFTWATCH_PSEUDONYM_KEY", raising=False)
    cfg = load_config(EXAMPLE)
    assert set(cfg.models) == {"support-router", "refund-approval"}
    assert cfg.attributes["age_band"].sensitive is True
    assert cfg.protected == ("age_band", "language")
    assert cfg.dimensions() == ("region", "language", "channel", "age_band", "age_band:language")
    assert cfg.windows.tick == 10.0
    assert cfg.windows.windows == (300.0, 3600.0)
    assert cfg.join.ttl == 86400.0
    assert cfg.problems() == []
    rule = {r.name: r for r in cfg.rules}["feature_drift_psi"]
    assert (rule.for_, rule.window, rule.threshold, rule.resolve_threshold) == (60.0, 300.0, 0.25, 0.1)
    assert {r.name for r in cfg.rules} >= {"selection_rate_disparity", "tpr_gap", "score_mean_change"}


CROSS_OBJECT = """
attributes:
  region: {max_values: 5}
  language: {}
protected: [region, gender]
intersections: [[region, nation]]
models:
  m1:
    favorable: ["yes"]
    reference: {learn_events: 1000}
    features:
      x: {kind: numeric}
rules:
  - name: r1
    metric: no_such_metric
    threshold: 1
  - name: r1
    metric: complaint_rate
    window: 7m
    threshold: 0.1
  - name: r3
    metric: psi
    threshold: 0.2
  - name: r4
    metric: complaint_rate
    op: ">"
    threshold: 0.1
    resolve_threshold: 0.2
  - name: r5
    metric: disparate_impact_ratio
    attribute: language
    op: "<"
    threshold: 0.8
    resolve_threshold: 0.7
  - name: r6
    metric: selection_rate
    feature: x
    threshold: 0.5
  - name: r7
    metric: psi
    feature: y
    model: nope
    threshold: 0.2
"""


def test_cross_object_mistakes_are_all_reported_with_file_and_key_path(tmp_path: Path) -> None:
    """A config with many cross-object mistakes lists every one, each prefixed by the file and its key path."""
    path = write(tmp_path, CROSS_OBJECT)
    probs = problems_of(path)
    assert all(p.startswith(f"{path}: ") for p in probs), probs
    body = [p[len(f"{path}: ") :] for p in probs]

    def has(prefix: str, text: str) -> bool:
        return any(b.startswith(prefix) and text in b for b in body)

    assert has("protected[1]:", "'gender' is not a configured attribute")
    assert has("intersections[0]:", "'nation' is not a configured attribute")
    assert has("rules[0] (r1).metric:", "unknown metric 'no_such_metric'")
    assert has("rules[1] (r1).name:", "duplicate rule name")
    assert has("rules[1] (r1).window:", "420.0s is not a configured window")
    assert has("rules[2] (r3).feature:", "drift needs a monitored feature")
    assert has("rules[3] (r4).resolve_threshold:", "healthy side")
    assert has("rules[4] (r5).attribute:", "protected attribute")
    assert has("rules[4] (r5).resolve_threshold:", "healthy side")
    assert has("rules[5] (r6).feature:", "only drift metrics take a feature")
    assert has("rules[6] (r7).model:", "'nope' is not a configured model")
    assert len(probs) == 11, probs


def test_unknown_keys_anywhere_are_forbidden_and_all_listed(tmp_path: Path) -> None:
    """Unknown keys at any depth are rejected ('extra' forbidden), each reported with its dotted key path."""
    path = write(
        tmp_path,
        """
        colour: red
        attributes:
          region: {max_valuez: 5}
        models:
          m1:
            favorable: ["yes"]
            reference: {learn_events: 1000, lern_seconds: 5}
        windows: {tick: 10s, size: 5m}
        rules:
          - name: r1
            metric: complaint_rate
            threshold: 0.1
            treshold: 0.2
        """,
    )
    probs = problems_of(path)
    assert all(p.startswith(f"{path}: ") for p in probs)
    for key_path in (
        "colour",
        "attributes.region.max_valuez",
        "models.m1.reference.lern_seconds",
        "windows.size",
        "rules.0.treshold",
    ):
        assert any(p.startswith(f"{path}: {key_path}: ") and "Extra inputs are not permitted" in p for p in probs), (
            key_path,
            probs,
        )


def test_field_level_errors_name_their_key_path(tmp_path: Path) -> None:
    """Invalid values (bad duration, out-of-range numbers, bad rule name) are reported with their key paths."""
    path = write(
        tmp_path,
        """
        attributes:
          region: {max_values: 0}
        models:
          m1:
            favorable: ["yes"]
        windows: {tick: 10 seconds}
        kafka: {batch_wait: 0s, batch_bytes: 0}
        rules:
          - name: Bad-Name
            metric: complaint_rate
            threshold: 0.1
        """,
    )
    probs = problems_of(path)
    for key_path in (
        "attributes.region.max_values",
        "windows.tick",
        "rules.0.name",
        "kafka.batch_wait",
        "kafka.batch_bytes",
    ):
        assert any(p.startswith(f"{path}: {key_path}: ") for p in probs), (key_path, probs)


def test_field_errors_and_cross_object_mistakes_are_listed_together(tmp_path: Path) -> None:
    """A file with bad field values and cross-object mistakes lists both kinds at once (no fix-and-rerun rounds),
    rules at their own positions, and nothing that only setting the bad parts aside would cause: a rule with a bad
    field is left out of the cross-object checks, but a receiver that names it is not told it does not exist, and
    a rule watching a feature whose block is invalid is not told the feature is unmonitored."""
    path = write(
        tmp_path,
        """
        attributes:
          region: {}
        protected: [region, gender]
        models:
          m1:
            favorable: ["yes"]
            reference: {learn_events: 1000}
            features:
              x: {kind: numerik}
              y: {kind: numeric}
        alerting:
          notify:
            receivers:
              - {name: oncall, url: "http://127.0.0.1:9/hook", rules: [broken]}
        rules:
          - name: broken
            metric: complaint_rate
            op: "=>"
            threshold: 0.1
          - name: typo
            metric: complaint_rat
            threshold: 0.1
          - name: drift_x
            metric: psi
            feature: x
            threshold: 0.2
          - name: drift_z
            metric: psi
            feature: z
            threshold: 0.2
          - name: elsewhere
            metric: complaint_rate
            model: nope
            threshold: 0.1
        """,
    )
    body = [p[len(f"{path}: ") :] for p in problems_of(path)]
    assert any(b.startswith("models.m1.features.x.kind:") for b in body), body
    assert any(b.startswith("rules.0.op:") for b in body), body
    assert any(b.startswith("protected[1]:") and "'gender'" in b for b in body), body
    assert any(b.startswith("rules[1] (typo).metric:") and "'complaint_rat'" in b for b in body), body
    assert any(b.startswith("rules[3] (drift_z).feature:") for b in body), body
    assert any(b.startswith("rules[4] (elsewhere).model:") and "'nope'" in b for b in body), body
    assert not [b for b in body if "broken" in b or b.startswith("rules[2]")], body
    assert len(body) == 6, body


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("attributes: {}\nmodels: {}\nrules: 5\n", "rules"),
        ("attributes: {}\nmodels: true\n", "models"),
        ("attributes: {}\nmodels: {}\nrule_files: more-rules.yaml\n", "rule_files"),
        ("attributes: {}\nmodels: {}\nrule_files: [1]\n", "rule_files"),
        ("attributes: {}\nmodels: {}\nrules: {name: r}\nrule_files: [more-rules.yaml]\n", "rules"),
    ],
)
def test_sections_of_the_wrong_shape_are_config_errors_naming_them(tmp_path: Path, text: str, key: str) -> None:
    """A section of the wrong shape (a number for the rules, a flag for the models, one path for rule_files) is a
    problem named by its key, never a traceback from reading the file."""
    (tmp_path / "more-rules.yaml").write_text("rules: []\n")
    probs = problems_of(write(tmp_path, text))
    assert any(p.split(": ", 2)[1].startswith(key) for p in probs), probs


def test_window_not_a_whole_number_of_ticks_is_reported(tmp_path: Path) -> None:
    """A sliding window that is not a whole number of ticks is a problem of windows.windows."""
    path = write(
        tmp_path,
        """
        attributes: {region: {}}
        models: {m1: {favorable: ["yes"]}}
        windows: {tick: 10s, windows: [5m, 25s]}
        """,
    )
    assert problems_of(path) == [f"{path}: windows.windows: 25.0s is not a whole number of ticks (10.0s)"]


def test_reference_needs_exactly_one_source(tmp_path: Path) -> None:
    """A model reference with two sources (learn_events and learn_seconds) is reported."""
    path = write(
        tmp_path,
        """
        attributes: {region: {}}
        models: {m1: {favorable: ["yes"], reference: {learn_events: 500, learn_seconds: 1h}}}
        """,
    )
    assert problems_of(path) == [
        f"{path}: models.m1.reference: give exactly one of profile, learn_events, learn_seconds"
    ]


def test_rule_files_are_merged_relative_to_the_config(tmp_path: Path) -> None:
    """Rules from rule_files (relative to the config file) are added after the inline rules."""
    write(tmp_path, "rules:\n  - {name: extra, metric: complaint_rate, threshold: 0.2}\n", "rules.yaml")
    path = write(
        tmp_path,
        """
        rule_files: [rules.yaml]
        attributes: {region: {}}
        models: {m1: {favorable: ["yes"]}}
        rules:
          - {name: inline, metric: escalation_rate, threshold: 0.1}
        """,
    )
    cfg = load_config(path)
    assert [r.name for r in cfg.rules] == ["inline", "extra"]


def test_unreadable_and_non_mapping_files_raise_config_error(tmp_path: Path) -> None:
    """A missing file, invalid YAML and a non-mapping top level all raise ConfigError naming the file."""
    missing = tmp_path / "nope.yaml"
    assert problems_of(missing)[0].startswith(f"{missing}: cannot read")
    bad = write(tmp_path, "a: [1, 2\n", "bad.yaml")
    assert "not valid YAML" in problems_of(bad)[0]
    lst = write(tmp_path, "- 1\n- 2\n", "list.yaml")
    assert problems_of(lst) == [f"{lst}: the top level must be a mapping"]


def test_rule_for_alias_and_durations() -> None:
    """Rule accepts 'for' as the alias of for_ and parses duration strings into seconds."""
    r = Rule.model_validate(
        {
            "name": "x",
            "metric": "complaint_rate",
            "threshold": 0.1,
            "for": "1m30s",
            "window": "5m",
            "keep_firing_for": "250ms",
        }
    )
    assert (r.for_, r.window, r.keep_firing_for) == (90.0, 300.0, 0.25)


def test_load_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_key reads the key from the configured environment variable."""
    monkeypatch.setenv(KEY_ENV, "k" * 32)
    key = load_key(PrivacyConfig(key_env=KEY_ENV))
    assert key.get_secret_value() == b"k" * 32
    assert "k" * 32 not in repr(key)


def test_load_key_missing_env_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the environment variable load_key raises SecretMissingError (never a default key)."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(SecretMissingError) as info:
        load_key(PrivacyConfig(key_env=KEY_ENV))
    assert KEY_ENV in info.value.problems[0]
    assert isinstance(info.value, ConfigError)


def test_load_key_short_key_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key shorter than 16 bytes is refused."""
    monkeypatch.setenv(KEY_ENV, "x" * 15)
    with pytest.raises(SecretMissingError):
        load_key(PrivacyConfig(key_env=KEY_ENV))


def test_load_key_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """key_file takes precedence over the env var and its content is stripped of surrounding whitespace."""
    monkeypatch.setenv(KEY_ENV, "e" * 32)
    kf = tmp_path / "key"
    kf.write_bytes(b"  file-key-0123456789abcdef\n")
    assert load_key(PrivacyConfig(key_env=KEY_ENV, key_file=kf)).get_secret_value() == b"file-key-0123456789abcdef"
    with pytest.raises(SecretMissingError, match="cannot read"):
        load_key(PrivacyConfig(key_env=KEY_ENV, key_file=tmp_path / "absent"))


def test_config_model_is_frozen() -> None:
    """A loaded Config cannot be mutated."""
    cfg = Config.model_validate({"attributes": {}, "models": {"m": {"favorable": ["y"]}}})
    with pytest.raises(Exception, match="frozen"):
        cfg.min_samples = 5  # type: ignore[misc]


def test_approval_without_the_api_is_a_config_error(tmp_path: Path) -> None:
    """An action that waits for approval while the API (the only way to approve) is off fails check-config."""
    path = write(
        tmp_path,
        """
        attributes: {region: {}}
        models: {m: {favorable: [approve], reference: {learn_events: 1000}}}
        alerting:
          actions: {ask: {kind: route_to_human, transport: kafka, requires_approval: true}}
        """,
    )
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: alerting.actions.ask.requires_approval:")
    assert "alerting.api.enabled" in problem
