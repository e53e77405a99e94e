"""Promotion policy: parsing with line-numbered errors, durations and gate verdicts, by equality."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.rules.policy import (
    CANARY_KEYS,
    DIRECTIONS,
    GATE_KEYS,
    GUARD_KEYS,
    MODEL_KEYS,
    TOP_KEYS,
    Approvers,
    Canary,
    Freeze,
    Gate,
    GateVerdict,
    Guard,
    ModelPolicy,
    Policy,
    PolicyError,
    Slot,
    better_direction,
    evaluate,
    gate_rule,
    load_policy,
    parse_duration,
    parse_policy,
    verdict_line,
    verdict_note,
)

SPEC_EXAMPLE = """\
defaults:
  gates:                       # all must pass before Staging
    - metric: accuracy
      min: 0.90
    - metric: f1
      no_worse_than_production: 0.01     # candidate >= production - 0.01
    - metric: latency_ms
      max: 50
      no_worse_than_production: 5        # lower is better for max-bounded metrics
  approval_expires_after: 72h  # pending notices expire: buttons removed, version archived
  remind_every: 24h            # a thread reply while a notice is pending
  canary:
    duration: 30m              # after approval, hold in Staging for this long...
    require_report: true       # ...and wait for a passing /hooks/canary verdict
models:
  churn:
    gates:                     # replaces the defaults for this model
      - metric: auc
        min: 0.8
"""

SPEC_DEFAULTS = ModelPolicy(
    gates=(
        Gate("accuracy", min=0.90),
        Gate("f1", no_worse_than_production=0.01),
        Gate("latency_ms", max=50, no_worse_than_production=5),
    ),
    approval_expires_after=72 * 3600,
    remind_every=24 * 3600,
    canary=Canary(duration=30 * 60, require_report=True),
)


def parse(text: str) -> Policy:
    return parse_policy(textwrap.dedent(text), source="policy.yaml")


def error(text: str) -> str:
    with pytest.raises(PolicyError) as caught:
        parse(text)
    message = str(caught.value)
    assert "\n" not in message
    return message


def assert_error(text: str, line: int, phrase: str) -> None:
    message = error(text)
    assert message.startswith(f"policy.yaml:{line}: "), message
    assert phrase in message, message


# --- parsing: the happy paths ---


def test_the_spec_example_parses_to_the_expected_objects():
    churn = ModelPolicy(
        gates=(Gate("auc", min=0.8),),
        approval_expires_after=72 * 3600,
        remind_every=24 * 3600,
        canary=Canary(duration=30 * 60, require_report=True),
    )
    assert parse(SPEC_EXAMPLE) == Policy(defaults=SPEC_DEFAULTS, models={"churn": churn})


def test_a_model_entry_replaces_the_keys_it_sets_and_inherits_the_rest():
    policy = parse(SPEC_EXAMPLE)
    churn = policy.for_model("churn")
    assert churn.gates == (Gate("auc", min=0.8),)
    assert churn.approval_expires_after == SPEC_DEFAULTS.approval_expires_after
    assert churn.remind_every == SPEC_DEFAULTS.remind_every
    assert churn.canary == SPEC_DEFAULTS.canary


def test_a_model_without_an_entry_gets_the_defaults():
    assert parse(SPEC_EXAMPLE).for_model("fraud") == SPEC_DEFAULTS


def test_a_model_can_turn_off_inherited_settings_with_null():
    policy = parse("""
        defaults:
          remind_every: 24h
          canary: {duration: 10m}
        models:
          churn: {remind_every: null, canary: null, gates: []}
    """)
    assert policy.for_model("churn") == ModelPolicy()
    assert policy.for_model("other") == ModelPolicy(remind_every=86400, canary=Canary(600))


def test_a_model_canary_replaces_the_default_canary_whole():
    policy = parse("""
        defaults:
          canary: {duration: 1h, require_report: true}
        models:
          churn:
            canary: {duration: 5m}
    """)
    assert policy.for_model("churn").canary == Canary(duration=300, require_report=False)


def test_defaults_alone_and_an_empty_mapping_are_fine():
    assert parse("defaults: {}\n") == Policy.empty()
    assert parse("{}\n") == Policy.empty()
    assert parse("models: {}\n") == Policy.empty()


def test_the_empty_policy_has_no_gates_expiry_reminders_or_canary():
    assert Policy.empty().for_model("churn") == ModelPolicy(
        gates=(), approval_expires_after=None, remind_every=None, canary=None
    )


def test_model_names_are_taken_literally():
    policy = parse("models:\n  yes: {remind_every: 1h}\n  123: {remind_every: 2h}\n")
    assert set(policy.models) == {"yes", "123"}


def test_anchors_and_aliases_share_gates():
    policy = parse("""
        defaults:
          gates: &common
            - {metric: accuracy, min: 0.9}
        models:
          churn: {gates: *common, remind_every: 1h}
    """)
    assert policy.for_model("churn").gates == (Gate("accuracy", min=0.9),)


def test_direction_settles_a_range_gate_compared_with_production():
    policy = parse("""
        defaults:
          gates:
            - {metric: calibration, min: 0.1, max: 0.9, no_worse_than_production: 0.02,
               direction: lower}
            - {metric: auc, no_worse_than_production: 0.0, direction: lower}
    """)
    range_gate, auc = policy.defaults.gates
    assert range_gate == Gate("calibration", 0.1, 0.9, 0.02, direction="lower")
    assert not range_gate.higher_is_better
    assert auc == Gate("auc", no_worse_than_production=0.0, direction="lower")


def test_a_range_without_production_comparison_needs_no_direction():
    gates = parse("defaults: {gates: [{metric: p, min: 0.1, max: 0.9}]}").defaults.gates
    assert gates == (Gate("p", min=0.1, max=0.9),)


def test_exponents_without_a_dot_are_numbers():
    # YAML 1.1 (PyYAML) reads 1e-3 as a string; a policy author means a number.
    gates = parse("defaults: {gates: [{metric: loss, max: 1e-3}]}").defaults.gates
    assert gates == (Gate("loss", max=0.001),)


def test_load_policy_reads_the_file_and_names_it_in_errors(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(SPEC_EXAMPLE, encoding="utf-8")
    assert load_policy(path).defaults == SPEC_DEFAULTS
    path.write_text("defaults:\n  gate: []\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"^.*policy\.yaml:2: unknown key 'gate'"):
        load_policy(str(path))


def test_load_policy_refuses_text_that_is_not_utf8(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"defaults: {}\nmodels:\n  caf\xe9: {}\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(str(path))
    assert str(caught.value) == f"{path}:3: policy file is not UTF-8 text"


# --- parsing: every problem names its line ---


def test_an_empty_file_is_an_error():
    assert error("") == "policy.yaml:1: policy file is empty"
    assert error("# only a comment\n\n") == "policy.yaml:1: policy file is empty"


def test_the_guard_defaults_to_proposing_within_a_day():
    assert Policy.empty().for_model("churn").guard == Guard(window=24 * 3600, action="propose")
    assert parse("defaults:\n  gates: []\n").defaults.guard == Guard()


def test_a_model_guard_replaces_the_default_guard_whole():
    policy = parse(
        """\
        defaults:
          guard: {window: 2h, action: rollback}
        models:
          churn:
            guard: {window: 30m}
          fraud: {}
        """
    )
    assert policy.for_model("churn").guard == Guard(window=1800, action="propose")
    assert policy.for_model("fraud").guard == Guard(window=7200, action="rollback")
    assert policy.for_model("other").guard == Guard(window=7200, action="rollback")


@pytest.mark.parametrize(
    ("guard", "line", "phrase"),
    [
        ("guard:\n    window: soon\n", 3, "guard.window: expected a duration"),
        ("guard:\n    window: 0\n", 3, "guard.window: must be positive"),
        (
            "guard:\n    action: revert\n",
            3,
            "guard.action must be propose or rollback, got 'revert'",
        ),
        ("guard:\n    action: [rollback]\n", 3, "guard.action must be propose or rollback"),
        ("guard:\n    windows: 1h\n", 3, "unknown key 'windows' in guard; allowed: window"),
        ("guard: 24h\n", 2, "guard must be a mapping, got '24h'"),
        ("guard: null\n", 2, "guard must be a mapping, got null"),
    ],
)
def test_guard_problems(guard, line, phrase):
    assert_error(f"defaults:\n  {guard}", line, phrase)


@pytest.mark.parametrize(
    ("text", "line", "phrase"),
    [
        ("defaults:\n  gates: []\n  remind_every: 1h\n   canary: x\n", 4, "invalid YAML"),
        ("defaults:\n\tgates: []\n", 2, "invalid YAML"),
        ("defaults:\n  gates: [{metric: a, min: 1}\nmodels: {}\n", 3, "invalid YAML"),
        ("defaults: {}\n---\nmodels: {}\n", 2, "expected a single document"),
        ("defaults:\n  gates: *nowhere\n", 2, "found undefined alias"),
        ("defaults: {}\nmodels: '\x07'\n", 2, "character #x0007 is not allowed"),
    ],
)
def test_yaml_syntax_errors_name_the_line(text, line, phrase):
    assert_error(text, line, phrase)


@pytest.mark.parametrize("text", ["- defaults\n", "just words\n", "null\n", "42\n"])
def test_the_top_level_must_be_a_mapping(text):
    message = error(text)
    assert message.startswith("policy.yaml:1: ")
    assert "must be a mapping" in message or "policy file is empty" in message


@pytest.mark.parametrize(
    ("text", "line", "phrase"),
    [
        (
            "defaults: {}\ndefault: {}\n",
            2,
            "unknown key 'default' in the policy file; allowed: defaults, models",
        ),
        (
            "defaults:\n  remind_every: 1h\n  reminder: 2h\n",
            3,
            "unknown key 'reminder' in defaults; allowed: gates, approval_expires_after, "
            "remind_every, canary",
        ),
        (
            "models:\n  churn:\n    gates: []\n    gate: []\n",
            4,
            "unknown key 'gate' in model 'churn'",
        ),
        (
            "defaults:\n  gates:\n    - metric: a\n      mn: 1\n",
            4,
            "unknown key 'mn' in a gate; allowed: metric, min, max, no_worse_than_production, "
            "direction",
        ),
        (
            "defaults:\n  canary:\n    duration: 1h\n    report: true\n",
            4,
            "unknown key 'report' in canary; allowed: duration, require_report",
        ),
    ],
)
def test_unknown_keys_are_named_at_every_level(text, line, phrase):
    assert_error(text, line, phrase)


GATE_PROBLEMS = [
    ("- min: 0.9", "a gate needs a 'metric'"),
    ("- metric: accuracy", "gate 'accuracy' needs min, max or no_worse_than_production"),
    ("- {metric: '', min: 1}", "metric must be a metric name"),
    ("- {metric: [a], min: 1}", "metric must be a metric name, got a list"),
    ("- {metric: a, min: high}", "min must be a number, got 'high'"),
    ("- {metric: a, max: true}", "max must be a number, got 'true'"),
    ("- {metric: a, min: .nan}", "min must be a finite number"),
    ("- {metric: a, min: [1]}", "min must be a number, got a list"),
    ("- {metric: a, min: 0.9, max: 0.1}", "gate 'a' has min 0.9 above max 0.1"),
    ("- {metric: a, no_worse_than_production: -0.1}", "must not be negative"),
    ("- {metric: a, no_worse_than_production: lots}", "no_worse_than_production must be a number"),
    (
        "- {metric: a, min: 0, max: 1, no_worse_than_production: 0.1}",
        "gate 'a' has min and max, so no_worse_than_production needs direction: higher or lower",
    ),
    (
        "- {metric: a, no_worse_than_production: 0.1, direction: up}",
        "direction must be 'higher' or 'lower', got 'up'",
    ),
    ("- {metric: a, min: 1, direction: higher}", "direction only applies with no_worse"),
    (
        "- {metric: a, min: 1, no_worse_than_production: 0, direction: lower}",
        "direction 'lower' contradicts min",
    ),
    (
        "- {metric: a, max: 1, no_worse_than_production: 0, direction: higher}",
        "direction 'higher' contradicts max",
    ),
    ("- {metric: a, min: 1, min: 2}", "duplicate key 'min' in a gate"),
    ("- [metric, a]", "a gate must be a mapping, got a list"),
]


@pytest.mark.parametrize(("gate", "phrase"), GATE_PROBLEMS)
def test_gate_problems_name_the_line_of_the_gate(gate, phrase):
    text = f"defaults:\n  gates:\n    - {{metric: fine, min: 0}}\n    {gate}\n"
    assert_error(text, 4, phrase)


def test_a_problem_in_a_block_gate_names_the_line_of_the_offending_value():
    text = """\
        defaults:
          gates:
            - metric: accuracy
              min: 0.9
            - metric: f1
              no_worse_than_production: -0.01
    """
    assert_error(text, 6, "no_worse_than_production must not be negative")


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        ("3 days", "approval_expires_after: expected a duration like 30s, 15m, 72h or 7d"),
        ("0s", "approval_expires_after: must be positive"),
        ("-5", "approval_expires_after: must be positive"),
        ("1h30m", "approval_expires_after: expected a duration"),
        ("true", "approval_expires_after: expected a duration"),
        ("[1h]", "approval_expires_after must be a duration like 30s, 15m, 72h or 7d, got a list"),
    ],
)
def test_bad_durations_name_the_key_and_line(value, phrase):
    assert_error(f"defaults:\n  remind_every: 1h\n  approval_expires_after: {value}\n", 3, phrase)


@pytest.mark.parametrize(
    ("canary", "line", "phrase"),
    [
        ("canary:\n    require_report: true\n", 3, "canary needs a duration"),
        ("canary:\n    duration: soon\n", 3, "canary.duration: expected a duration"),
        (
            "canary:\n    duration: 1h\n    require_report: maybe\n",
            4,
            "canary.require_report must be true or false, got 'maybe'",
        ),
        (
            "canary:\n    duration: 1h\n    require_report: 1\n",
            4,
            "canary.require_report must be true or false, got '1'",
        ),
        ("canary: 30m\n", 2, "canary must be a mapping, got '30m'"),
    ],
)
def test_canary_problems(canary, line, phrase):
    assert_error(f"defaults:\n  {canary}", line, phrase)


@pytest.mark.parametrize(
    ("text", "line", "phrase"),
    [
        ("models:\n  - churn\n", 2, "models must be a mapping, got a list"),
        ("models:\n  churn: strict\n", 2, "model 'churn' must be a mapping, got 'strict'"),
        ("models:\n  churn:\n", 2, "model 'churn' must be a mapping, got null"),
        ("models:\n  '': {}\n", 2, "a model name must not be empty"),
        ("models:\n  [a, b]: {}\n", 2, "keys in models must be plain names"),
        ("defaults:\n  gates: {metric: a}\n", 2, "gates must be a list (use [] for none)"),
        ("defaults:\n  gates:\n", 2, "gates must be a list (use [] for none), got null"),
        ("defaults: {}\ndefaults: {}\n", 2, "duplicate key 'defaults' in the policy file"),
        ("base: &b {remind_every: 1h}\n", 1, "unknown key 'base'"),
        ("defaults:\n  <<: {remind_every: 1h}\n", 2, "merge keys (<<) are not supported"),
        ("defaults:\n  remind_every: !!int nope\n", 2, "remind_every must be a duration"),
        ("defaults:\n  gates: [{metric: a, min: !!timestamp x}]\n", 2, "min must be a number"),
    ],
)
def test_structure_problems(text, line, phrase):
    assert_error(text, line, phrase)


def test_deep_nesting_is_an_error_not_a_crash():
    message = error("defaults: " + "[" * 5000 + "]" * 5000 + "\n")
    assert message.startswith("policy.yaml:1: ")


# --- durations ---


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("72h", 259200),
        ("7d", 604800),
        ("1.5h", 5400),
        (" 2 m ", 120),
        ("45", 45),
        (90, 90),
        (0.5, 0.5),
    ],
)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    ["", "h", "3 days", "1h30m", "10w", "-5m", "0s", 0, -1, True, None, float("inf"), 10**400],
)
def test_parse_duration_refuses(value):
    with pytest.raises(ValueError):
        parse_duration(value)


# --- gate evaluation ---


def verdict(gate: Gate, value: float | None, production: float | None = None) -> GateVerdict:
    candidate = {} if value is None else {gate.metric: value}
    prod = None if production is None else {gate.metric: production}
    (only,) = evaluate([gate], candidate, prod)
    return only


def test_min_is_higher_is_better_and_its_boundary_passes():
    gate = Gate("accuracy", min=0.9)
    assert verdict(gate, 0.93) == GateVerdict(gate, True, 0.93, None, "accuracy 0.93 ≥ 0.9")
    assert verdict(gate, 0.9).passed
    failed = verdict(gate, 0.85)
    assert not failed.passed
    assert failed.message == "accuracy 0.85 < min 0.9 (short by 0.05)"


def test_max_is_lower_is_better_and_its_boundary_passes():
    gate = Gate("latency_ms", max=50)
    assert verdict(gate, 50).passed
    assert verdict(gate, 12.5).message == "latency_ms 12.5 ≤ 50"
    assert verdict(gate, 60) == GateVerdict(
        gate, False, 60, None, "latency_ms 60 > max 50 (over by 10)"
    )


def test_a_range_reports_only_the_failing_side():
    gate = Gate("p", min=0.1, max=0.9)
    assert verdict(gate, 0.5).message == "p 0.5 ≥ 0.1; ≤ 0.9"
    assert verdict(gate, 0.95).message == "p 0.95 > max 0.9 (over by 0.05)"


def test_higher_is_better_tolerance_at_and_beyond_the_boundary():
    gate = Gate("f1", no_worse_than_production=0.01)
    assert verdict(gate, 0.84, production=0.85).passed  # exactly production - tolerance
    better = verdict(gate, 0.90, production=0.85)
    assert better.message == "f1 0.9 vs Production 0.85: better by 0.05"
    assert verdict(gate, 0.85, production=0.85).message == "f1 0.85 vs Production 0.85: the same"
    beyond = verdict(gate, 0.8399, production=0.85)
    assert not beyond.passed
    assert beyond.production_value == 0.85
    assert beyond.message == "f1 0.8399 vs Production 0.85: worse by 0.0101 (tolerance 0.01)"


def test_lower_is_better_tolerance_at_and_beyond_the_boundary():
    gate = Gate("latency_ms", max=50, no_worse_than_production=5)
    assert not gate.higher_is_better
    assert verdict(gate, 45, production=40).passed  # exactly production + tolerance
    assert verdict(gate, 30, production=40).passed
    beyond = verdict(gate, 46, production=40)
    assert not beyond.passed
    assert beyond.message == "latency_ms 46 vs Production 40: worse by 6 (tolerance 5)"


def test_both_failures_are_reported():
    gate = Gate("latency_ms", max=50, no_worse_than_production=5)
    assert verdict(gate, 60, production=52).message == (
        "latency_ms 60 > max 50 (over by 10); vs Production 52: worse by 8 (tolerance 5)"
    )


def test_an_explicit_direction_overrides_the_default():
    gate = Gate("loss", no_worse_than_production=0.1, direction="lower")
    assert verdict(gate, 1.1, production=1.0).passed
    assert not verdict(gate, 1.2, production=1.0).passed
    assert verdict(gate, 0.2, production=1.0).passed


def test_a_missing_metric_fails_its_gate():
    gate = Gate("accuracy", min=0.9)
    assert verdict(gate, None, production=0.95) == GateVerdict(
        gate, False, None, 0.95, "accuracy: missing from the run"
    )


def test_a_metric_that_is_not_a_finite_number_fails_its_gate():
    (result,) = evaluate([Gate("auc", min=0.5)], {"auc": float("nan")}, None)
    assert not result.passed
    assert result.message == "auc: nan is not a finite number"


def test_without_production_only_absolute_bounds_apply():
    gates = SPEC_DEFAULTS.gates
    verdicts = evaluate(gates, {"accuracy": 0.93, "f1": 0.1, "latency_ms": 49}, None)
    assert [v.message for v in verdicts] == [
        "accuracy 0.93 ≥ 0.9",
        "f1 0.1: no Production to compare",
        "latency_ms 49 ≤ 50; no Production to compare",
    ]
    assert all(v.passed for v in verdicts)
    late = evaluate(gates, {"accuracy": 0.93, "f1": 0.1, "latency_ms": 51}, None)
    assert not all(v.passed for v in late)


def test_a_production_lacking_the_metric_is_no_production_to_compare():
    gate = Gate("f1", no_worse_than_production=0.01)
    (result,) = evaluate([gate], {"f1": 0.5}, {"accuracy": 0.99})
    assert result == GateVerdict(gate, True, 0.5, None, "f1 0.5: no Production to compare")


def test_the_spec_gates_against_production():
    verdicts = evaluate(
        SPEC_DEFAULTS.gates,
        {"accuracy": 0.85, "f1": 0.80, "latency_ms": 60},
        {"accuracy": 0.95, "f1": 0.85, "latency_ms": 52},
    )
    assert [verdict_line(v) for v in verdicts] == [
        "❌ accuracy 0.85 < min 0.9 (short by 0.05)",
        "❌ f1 0.8 vs Production 0.85: worse by 0.05 (tolerance 0.01)",
        "❌ latency_ms 60 > max 50 (over by 10); vs Production 52: worse by 8 (tolerance 5)",
    ]
    assert not any(v.passed for v in verdicts)


def test_no_gates_pass():
    assert evaluate((), {"accuracy": 0.1}, None) == []


def test_verdict_line_marks_a_pass():
    assert verdict_line(verdict(Gate("accuracy", min=0.9), 0.93)) == "✅ accuracy 0.93 ≥ 0.9"


# --- properties ---


def check_parses_or_refuses(text: str) -> None:
    try:
        result = parse_policy(text, source="p.yaml")
    except PolicyError as refused:
        assert str(refused).startswith("p.yaml:")
        assert "\n" not in str(refused)
    else:
        assert isinstance(result, Policy)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_parses_or_raises_policy_error(text):
    check_parses_or_refuses(text)


_KEYS = st.sampled_from(
    ["churn", *TOP_KEYS, *MODEL_KEYS, *GATE_KEYS, *CANARY_KEYS, *GUARD_KEYS, *DIRECTIONS]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["30s", "15m", "72h", "7d", "0s", "soon", "accuracy", "higher", "lower", ""]),
)
_DOCUMENTS = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(_DOCUMENTS, st.booleans())
def test_policy_shaped_documents_parse_or_raise_policy_error(document, flow):
    check_parses_or_refuses(yaml.safe_dump(document, default_flow_style=flow))


# --- routing and governance keys (SPEC 7, 11) ---

GOVERNANCE = """\
defaults:
  channel: C0MODELS
  approvers:
    users: [U012AB3CD]
    groups: [S0MLLEADS]
  approvals:
    - {group: S0MLLEADS, count: 1}
    - {group: S0RISK, count: 1}
  protect_production: alert
  freeze:
    - schedule: "0 16 * * FRI"
      duration: 64h
      timezone: Europe/Berlin
      reason: weekend freeze
models:
  fraud:
    channel: C0FRAUD
    approvers: {groups: [S0FRAUD]}
"""


def test_the_spec_governance_example_parses_and_models_inherit_what_they_do_not_set():
    policy = parse(GOVERNANCE)
    fraud = policy.for_model("fraud")
    assert (fraud.channel, fraud.approvers) == ("C0FRAUD", Approvers(groups=("S0FRAUD",)))
    assert fraud.approvals == (Slot(1, group="S0MLLEADS"), Slot(1, group="S0RISK"))
    assert fraud.freeze == (
        Freeze("0 16 * * FRI", 64 * 3600.0, timezone="Europe/Berlin", reason="weekend freeze"),
    )
    other = policy.for_model("churn")
    assert other.channel == "C0MODELS"
    assert other.approvers == Approvers(users=("U012AB3CD",), groups=("S0MLLEADS",))


def test_protect_production_defaults_to_alert_with_a_file_and_off_without():
    assert Policy.empty().protection("churn") == "off"
    assert parse("defaults: {}\n").protection("churn") == "alert"
    policy = parse("""
        defaults:
          protect_production: revert
        models:
          a: {protect_production: off}
          b: {protect_production: null}
    """)
    assert [policy.protection(m) for m in ("x", "a", "b")] == ["revert", "off", "off"]


def test_null_restores_each_routing_default():
    policy = parse(
        GOVERNANCE + "  churn: {channel: null, approvers: null, approvals: null, freeze: null}\n"
    )
    churn = policy.for_model("churn")
    assert (churn.channel, churn.approvers, churn.approvals, churn.freeze) == ("", None, (), ())


def test_a_slot_of_users_and_a_default_count():
    policy = parse(
        "defaults:\n  approvals:\n    - {users: [UA1, UB2]}\n    - {group: SRISK, count: 2}\n"
    )
    assert policy.defaults.approvals == (Slot(1, users=("UA1", "UB2")), Slot(2, group="SRISK"))


@pytest.mark.parametrize(
    ("body", "line", "phrase"),
    [
        ("protect_production: shout\n", 2, "protect_production must be one of alert, revert, off"),
        ("protect_production: [alert]\n", 2, "protect_production must be alert, revert or off"),
        ("approvals:\n    - {count: 1}\n", 3, "an approvals slot needs a group or users"),
        ("approvals:\n    - {group: SML, size: 1}\n", 3, "unknown key 'size' in an approvals slot"),
        ("approvals:\n    - {group: SML, count: 0}\n", 3, "count must be a whole number from 1"),
        ("approvals:\n    - {users: [UA1], count: 2}\n", 3, "count 2 is more than the 1 users"),
        ("approvals:\n    - {group: ml-leads}\n", 3, "group must be a Slack user group ID"),
        ("approvals: {group: SML}\n", 2, "approvals must be a list of slots"),
        ("channel: general\n", 2, "channel must be a Slack channel ID"),
        ('channel: "C0FRAUD\\n"\n', 2, "channel must be a Slack channel ID"),
        ('approvers: {users: ["UADA\\n"]}\n', 2, "approvers.users must list Slack user IDs"),
        ('approvers: {groups: ["SML\\n"]}\n', 2, "must be a Slack user group ID"),
        ("approvers: {users: [ada]}\n", 2, "approvers.users must list Slack user IDs"),
        ("approvers: {groups: SML}\n", 2, "approvers.groups must be a list"),
        ("approvers: {teams: [SML]}\n", 2, "unknown key 'teams' in approvers"),
        (
            "freeze:\n    - {schedule: '0 25 * * *', duration: 1h}\n",
            3,
            "freeze schedule '0 25 * * *' is not a cron expression (Bad hour)",
        ),
        ("freeze:\n    - {schedule: 'at noon', duration: 1h}\n", 3, "is not a cron expression"),
        ("freeze:\n    - {schedule: '0 0 31 2 *', duration: 1h}\n", 3, "is not a cron expression"),
        (
            "freeze:\n    - schedule: '0 16 * * FRI'\n      duration: 64h\n"
            "      timezone: Europe/Atlantis\n",
            5,
            "freeze timezone 'Europe/Atlantis' is not an IANA time zone",
        ),
        (
            "freeze:\n    - {schedule: '0 16 * * FRI', duration: 1h, timezone: ../../etc/passwd}\n",
            3,
            "is not an IANA time zone",
        ),
        ("freeze:\n    - {schedule: '0 16 * * FRI'}\n", 3, "a freeze needs a schedule (cron) and"),
        ("freeze:\n    - {schedule: '0 16 * * FRI', duration: soon}\n", 3, "freeze.duration"),
        ("freeze: weekends\n", 2, "freeze must be a list of windows"),
    ],
)
def test_malformed_governance_keys_name_the_line(body, line, phrase):
    assert_error(f"defaults:\n  {body}", line, phrase)


# -- what the notice shows beside each metric ---------------------------------------------


@pytest.mark.parametrize(
    ("gates", "direction"),
    [
        ([Gate("m", min=0.9)], "higher"),
        ([Gate("m", max=50)], "lower"),
        ([Gate("m", no_worse_than_production=0.01)], "higher"),
        ([Gate("m", no_worse_than_production=1, direction="lower")], "lower"),
        ([Gate("m", min=1, max=2)], None),  # a band: neither way is better
        ([Gate("m", min=1, max=2, no_worse_than_production=0, direction="lower")], "lower"),
        ([Gate("m", min=0.9), Gate("m", no_worse_than_production=0.01)], "higher"),
        ([Gate("m", min=0.9), Gate("m", max=2)], None),  # gates that disagree say nothing
        ([Gate("other", min=0.9)], None),  # no gate for the metric
        ([], None),
    ],
)
def test_the_gates_say_which_way_a_metric_is_better(gates, direction):
    assert better_direction(gates, "m") == direction


@pytest.mark.parametrize(
    ("gate", "rule"),
    [
        (Gate("m", min=0.9), "≥ 0.9"),
        (Gate("m", max=50, no_worse_than_production=5), "≤ 50, ≤ Production + 5"),
        (Gate("m", no_worse_than_production=0.01), "≥ Production − 0.01"),
        (Gate("m", no_worse_than_production=0), "≥ Production"),
    ],
)
def test_a_gate_rule_reads_as_what_it_asks(gate, rule):
    assert gate_rule(gate) == rule


def test_a_verdict_note_gives_the_rule_when_it_passes_and_the_shortfall_when_not():
    gate = Gate("f1", no_worse_than_production=0.01)
    assert verdict_note(verdict(gate, 0.9, 0.85)) == "✓ ≥ Production − 0.01"
    assert verdict_note(verdict(gate, 0.8)) == "✓ ≥ Production − 0.01 (no Production to compare)"
    failed = verdict(gate, 0.8, 0.85)
    assert verdict_note(failed) == "✗ vs Production 0.85: worse by 0.05 (tolerance 0.01)"
    assert failed.detail == "vs Production 0.85: worse by 0.05 (tolerance 0.01)"
    assert verdict_note(verdict(Gate("acc", min=0.9), None)) == "✗ missing from the run"
