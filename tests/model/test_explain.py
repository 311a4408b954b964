"""Explanations: the pure policy and weight plumbing, both methods on the tiny real bundle, the
faithfulness (deletion) test, and `bstream explain`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import torch
from click.testing import CliRunner

from model.explain import (
    Explainer,
    aggregate_tokens,
    kept_events,
    occlusion_weights,
    top_reasons,
    without,
)
from model.faithfulness import measure, true_deltas
from model.runtime import Runtime
from model.tiny import synthetic_windows
from schemas.validation import validate_prediction
from stream.commands.explain import explain


@pytest.fixture(scope="module")
def runtime(tiny_bundle: Path) -> Runtime:
    return Runtime.load(tiny_bundle, device="cpu")


def test_occlusion_weight_is_full_score_minus_score_without_the_event() -> None:
    weights = occlusion_weights(0.5, [0.2, 0.7], [0, 3])

    assert weights == pytest.approx({0: 0.3, 3: -0.2})


def test_token_weights_are_summed_per_event_and_specials_dropped() -> None:
    weights = aggregate_tokens([9.0, 0.1, 0.2, -0.5, 9.0, 7.0], [-1, 0, 0, 2, -1, -1])

    assert weights == pytest.approx({0: 0.3, 2: -0.5})


def test_top_reasons_rank_by_magnitude_keep_sign_and_fit_the_prediction_schema() -> None:
    window = [
        {"event_type": t, "item_id": str(i), "ts": i} for i, t in enumerate(["view", "cart", "fav"])
    ]

    reasons = top_reasons(window, {0: 0.1, 1: -0.4, 2: 0.1}, k=2)

    assert reasons == [
        {"event_index": 1, "event_type": "cart", "item_id": "1", "weight": -0.4},
        {"event_index": 2, "event_type": "fav", "item_id": "2", "weight": 0.1},  # tie: newer first
    ]
    prediction = {"user": "u", "scores": {"purchase": 0.3}, "model_version": "v", "window_size": 3,
                  "last_event_ts": 2, "predicted_at": 3, "reasons": reasons}  # fmt: skip
    assert validate_prediction(prediction) is None


def test_without_leaves_out_one_event_and_keeps_the_window() -> None:
    window = [{"item_id": "a"}, {"item_id": "b"}, {"item_id": "c"}]

    assert without(window, 1) == [{"item_id": "a"}, {"item_id": "c"}]
    assert len(window) == 3


def test_explain_gives_top_k_reasons_that_point_at_encoded_events(runtime: Runtime) -> None:
    windows, _ = synthetic_windows(30, seed=7)

    reasons = Explainer(runtime).explain(windows, top_k=3)

    assert len(reasons) == 30
    for window, encoded, rs in zip(windows, runtime.encode(windows), reasons, strict=True):
        assert 1 <= len(rs) <= 3
        for r in rs:
            assert r["event_index"] in kept_events(encoded)
            assert r["event_type"] == window[r["event_index"]]["event_type"]
            assert r["item_id"] == window[r["event_index"]]["item_id"]
        assert [abs(r["weight"]) for r in rs] == sorted(
            (abs(r["weight"]) for r in rs), reverse=True
        )


def test_occlusion_weight_equals_the_score_change_when_the_event_is_removed(
    runtime: Runtime,
) -> None:
    window = synthetic_windows(40, seed=5)[0][3]
    full = runtime.predict([window])[0]["purchase"]

    weights = Explainer(runtime).weights([window], [runtime.predict([window])[0]])[0]

    for i, weight in weights.items():
        assert weight == pytest.approx(
            full - runtime.predict([without(window, i)])[0]["purchase"], abs=1e-5
        )


def test_ig_weights_sum_to_score_minus_pad_baseline_score(runtime: Runtime) -> None:
    explainer = Explainer(runtime, method="ig", ig_steps=64)
    window = synthetic_windows(10, seed=2)[0][1]
    encoded = runtime.encode([window])[0]
    ids = torch.tensor([encoded.input_ids])
    mask = torch.ones_like(ids)
    baseline = torch.where(torch.tensor([encoded.event_index]) >= 0, runtime.encoder.pad_id, ids)

    weights = explainer.weights([window])[0]

    with torch.no_grad():
        gap = float(explainer.eager()(ids, mask)[0, 0] - explainer.eager()(baseline, mask)[0, 0])
    assert set(weights) == set(kept_events(encoded))
    assert sum(weights.values()) == pytest.approx(gap, abs=0.01)  # IG completeness, per event


@pytest.fixture(scope="module")
def held_out(runtime: Runtime) -> tuple[list[Any], list[dict[int, float]]]:
    """Windows the tiny bundle never saw (it trained on seed 0) and their measured deltas."""
    windows, _ = synthetic_windows(120, seed=11)
    return windows, true_deltas(runtime, windows, "purchase")


def test_removing_the_top_reason_moves_the_score_more_than_a_random_event(
    runtime: Runtime, held_out: tuple[list[Any], list[dict[int, float]]]
) -> None:
    result = measure(Explainer(runtime), *held_out)

    assert result.n_windows > 90
    assert result.margin > 0, result
    assert result.mean_abs_delta_top > 1.5 * result.mean_abs_delta_random, result


class SmallestFirst(Explainer):
    """An unfaithful explainer: ranks the events whose removal matters LEAST first."""

    def weights(
        self, windows: Sequence[Any], scores: Sequence[float | Mapping[str, float]] | None = None
    ) -> list[dict[int, float]]:
        return [
            {i: 1 / (1e-6 + abs(w)) for i, w in ws.items()}
            for ws in super().weights(windows, scores)
        ]


def test_faithfulness_measure_fails_an_unfaithful_explainer(
    runtime: Runtime, held_out: tuple[list[Any], list[dict[int, float]]]
) -> None:
    result = measure(SmallestFirst(runtime), *held_out)

    assert result.margin < 0


def write_user_events(path: Path, users: dict[str, list[dict[str, Any]]]) -> Path:
    rows = [{**e, "user_id": user} for user, events in users.items() for e in events]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def test_explain_command_prints_score_events_and_reasons(tiny_bundle: Path, tmp_path: Path) -> None:
    windows, _ = synthetic_windows(3, seed=4)
    events = write_user_events(tmp_path / "e.jsonl", {"u1": windows[0], "u2": windows[1]})

    result = CliRunner().invoke(explain, ["--bundle", str(tiny_bundle), "--events", str(events),
                                          "--user", "u1", "--top-k", "2"])  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "score purchase = " in result.output and "top 2 reasons:" in result.output
    assert len(re.findall(r"^  #\d+ ", result.output, flags=re.MULTILINE)) == 2


def test_explain_command_json_output_uses_the_prediction_reason_shape(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    windows, _ = synthetic_windows(1, seed=4)
    events = write_user_events(tmp_path / "e.jsonl", {"u1": windows[0]})

    result = CliRunner().invoke(explain, ["--bundle", str(tiny_bundle), "--events", str(events),
                                          "--json", "--method", "ig", "--top-k", "3"])  # fmt: skip

    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["user"] == "u1" and 0 <= out["score"] <= 1
    assert 1 <= len(out["reasons"]) <= 3
    assert set(out["reasons"][0]) == {"event_index", "event_type", "item_id", "weight"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "nobody"], "user 'nobody' has no valid events"),
        ([], "the file holds 2 users; pick one with --user"),
        (["--bundle", "/nonexistent/bundle"], "is not a directory"),
    ],
)
def test_explain_command_bad_input_is_one_line_error(
    tiny_bundle: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    windows, _ = synthetic_windows(2, seed=4)
    events = write_user_events(tmp_path / "e.jsonl", {"u1": windows[0], "u2": windows[1]})

    result = CliRunner().invoke(
        explain, ["--bundle", str(tiny_bundle), "--events", str(events), *args]
    )

    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
