"""The evidence rules (SPEC 15): signatures, requirements, pictures, the trend's metrics,
and the policy's `evidence` key."""

from __future__ import annotations

import json

import pytest

from registry.rules.evidence import (
    MAX_COLUMNS,
    MAX_TYPE_CHARS,
    Artifact,
    Signature,
    TrendPoint,
    Unreadable,
    diff_requirements,
    diff_schema,
    image_kind,
    parse_requirements,
    parse_signature,
    pick_images,
    trend_metrics,
)
from registry.rules.policy import Evidence, PolicyError, parse_policy


def mlmodel(inputs: list[dict], outputs: list[dict] | None = None) -> str:
    outs = json.dumps(outputs or [{"type": "double", "required": True}])
    return f"flavors: {{}}\nsignature:\n  inputs: '{json.dumps(inputs)}'\n  outputs: '{outs}'\n"


def test_a_signature_is_read_from_the_mlmodel_text():
    sig = parse_signature(
        mlmodel(
            [
                {"type": "double", "name": "age", "required": True},
                {"type": "string", "name": "plan", "required": False},
                {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 28]}},
            ]
        )
    )
    assert sig == Signature(
        (("age", "double"), ("plan", "string (optional)"), ("#2", "tensor float32 [-1×28]")),
        (("#0", "double"),),
    )
    assert parse_signature("flavors: {}\n") is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a: [unclosed", "MLmodel is not YAML"),
        ("- a list", "MLmodel is not a mapping"),
        ("signature: 3", "the signature in MLmodel is not a mapping"),
        ("signature:\n  inputs: '[oops'", "the signature's inputs are not JSON"),
        ("signature:\n  inputs: '{\"a\": 1}'", "the signature's inputs are not a list"),
    ],
)
def test_an_unreadable_signature_says_why(text, why):
    with pytest.raises(Unreadable, match=why):
        parse_signature(text)


def alias_bomb(levels: int) -> str:
    """An MLmodel whose signature's inputs are a YAML list of aliases that expands nine-fold
    per level: small to send, huge once expanded."""
    lines = ["flavors: {}", "l0: &l0 [{type: object, name: x, properties: {a: {type: long}}}]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    lines.append(f"signature:\n  inputs: *l{levels}")
    return "\n".join(lines) + "\n"


def test_an_mlmodel_with_yaml_aliases_is_refused_before_anything_expands():
    bomb = alias_bomb(5)
    assert len(bomb) < 500
    with pytest.raises(Unreadable, match="aliases"):
        parse_signature(bomb)
    with pytest.raises(Unreadable, match="aliases"):
        parse_signature("flavors: &f {}\nother: *f\n")  # anywhere in the file


def test_signature_columns_are_read_only_from_json_strings_as_mlflow_writes_them():
    listed = "signature:\n  inputs:\n  - {type: double, name: age}\n"
    with pytest.raises(Unreadable, match="inputs are not a JSON string"):
        parse_signature(listed)
    with pytest.raises(Unreadable, match="outputs are not a JSON string"):
        parse_signature("signature:\n  outputs: {type: double}\n")


def test_a_signature_too_large_or_too_deep_is_refused_in_a_line_and_long_types_are_cut():
    many = [{"type": "double", "name": f"c{i}"} for i in range(MAX_COLUMNS + 1)]
    with pytest.raises(Unreadable, match=f"over {MAX_COLUMNS} columns"):
        parse_signature(mlmodel(many))
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(Unreadable, match="inputs are not JSON"):
        parse_signature(f"signature:\n  inputs: '{deep}'\n")
    with pytest.raises(Unreadable, match="nested too deeply"):
        parse_signature("signature: " + "[" * 100_000)
    wide = {
        "type": "object",
        "name": "o",
        "properties": {f"p{i}": {"type": "long"} for i in range(500)},
    }
    ((name, kind),) = parse_signature(mlmodel([wide])).inputs
    assert name == "o" and len(kind) <= MAX_TYPE_CHARS and kind.endswith("…")


def test_the_schema_diff_names_added_removed_retyped_and_outputs():
    prod = Signature((("a", "double"), ("b", "long"), ("c", "string")), (("#0", "double"),))
    cand = Signature((("a", "string"), ("c", "string"), ("d", "double")), (("#0", "long"),))
    diff = diff_schema(cand, prod)
    assert diff.added == (("d", "double"),)
    assert diff.removed == (("b", "long"),)
    assert diff.retyped == (("a", "double", "string"),)
    assert diff.outputs_changed == ("double → long",)
    assert diff.breaking and not diff.unchanged
    same = diff_schema(prod, prod)
    assert same.unchanged and not same.breaking
    assert not diff_schema(
        Signature((("a", "double"), ("z", "long"))), Signature((("a", "double"),))
    ).breaking


def test_requirements_are_compared_by_normalised_name():
    prod = parse_requirements(
        "# pinned by the pipeline\nscikit_learn==1.5.0\nPandas>=2  # any 2\n-r base.txt\n\nnumpy\n"
    )
    assert prod == {"scikit-learn": "==1.5.0", "pandas": ">=2", "numpy": ""}
    cand = parse_requirements("scikit-learn==1.6.1\npandas >= 2\nxgboost[scikit-learn]==2.1.4\n")
    diff = diff_requirements(cand, prod)
    assert diff.added == (("xgboost", "==2.1.4"),)
    assert diff.removed == (("numpy", ""),)
    assert diff.repinned == (("scikit-learn", "==1.5.0", "==1.6.1"),)
    assert diff_requirements(prod, prod).unchanged


def test_pictures_are_picked_by_glob_sorted_and_at_most_four():
    listed = [
        Artifact(p, 10) for p in ("z.png", "plots/roc.png", "a.jpg", "b.png", "c.png", "d.png")
    ]
    shown, left = pick_images(listed, ["*.png"])
    assert [a.path for a in shown] == ["b.png", "c.png", "d.png", "plots/roc.png"]
    assert [a.path for a in left] == ["z.png"]
    shown, _ = pick_images(listed, ["plots/*.png", "*.jpg"])
    assert [a.path for a in shown] == ["a.jpg", "plots/roc.png"]


def test_a_picture_is_known_by_its_first_bytes_not_its_name():
    assert image_kind(b"\x89PNG\r\n\x1a\n....") == "png"
    assert image_kind(b"\xff\xd8\xff\xe0") == "jpeg"
    assert image_kind(b"GIF89a") == image_kind(b"<svg") == image_kind(b"") == ""


def test_the_trend_draws_the_gated_metrics_else_the_first_three():
    points = [TrendPoint("1", {"loss": 1.0, "auc": 0.5, "f1": 0.4, "acc": 0.9})]
    assert trend_metrics(["f1", "auc", "f1"], points) == ["f1", "auc"]
    assert trend_metrics([], points) == ["acc", "auc", "f1"]
    assert trend_metrics([], []) == []


def test_the_policy_takes_evidence_globs_and_turns_it_off_with_null():
    policy = parse_policy(
        "defaults:\n  evidence:\n    images: ['*.png', 'plots/*.jpg']\n    chart: false\n"
        "models:\n  quiet:\n    evidence: null\n"
    )
    assert policy.for_model("any").evidence == Evidence(("*.png", "plots/*.jpg"), chart=False)
    assert policy.for_model("quiet").evidence is None
    assert parse_policy("models: {}\n").for_model("m").evidence == Evidence(("*.png",), True)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("evidence: 3", "policy.yaml:2: evidence must be a mapping, got '3'"),
        ("evidence:\n    images: '*.png'", "policy.yaml:3: evidence.images must be a list of glob"),
        ("evidence:\n    pictures: []", "policy.yaml:3: unknown key 'pictures' in evidence"),
        ("evidence:\n    images: ['']", "policy.yaml:3: evidence.images must list glob patterns"),
        ("evidence:\n    images: [[a]]", "policy.yaml:3: evidence.images must be a glob pattern"),
        ("evidence:\n    chart: maybe", "policy.yaml:3: evidence.chart must be true or false"),
        (
            "evidence:\n    images: [" + ", ".join(["'*.png'"] * 11) + "]",
            "policy.yaml:3: evidence.images takes at most 10 patterns",
        ),
    ],
)
def test_a_bad_evidence_key_is_one_line_naming_its_line(text, problem):
    with pytest.raises(PolicyError) as caught:
        parse_policy("defaults:\n  " + text + "\n", "policy.yaml")
    assert str(caught.value).startswith(problem)
