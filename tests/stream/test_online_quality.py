"""Online metrics against scikit-learn on the same outcomes; PSI and the drift monitor (pure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from model.drift import (
    DriftMonitor,
    build_reference,
    events_profile,
    load_reference,
    psi,
    save_reference,
)
from stream.online_metrics import OnlineQuality, expected_calibration_error
from stream.simulate import DAY_MS, START_MS, SimConfig, simulate_events


def _outcomes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.08).astype(float)
    scores = np.clip(rng.beta(1.2, 9, n) + 0.15 * labels * rng.random(n), 0, 1)
    return scores, labels


def test_recent_window_equals_sklearn_on_the_last_n() -> None:
    scores, labels = _outcomes(12_000, seed=0)
    online = OnlineQuality(window=5000)
    for s, y in zip(scores, labels, strict=True):
        online.add(float(s), float(y), delay_ms=60_000)

    recent = online.recent()

    last_s, last_y = scores[-5000:], labels[-5000:]
    assert recent["auc"] == pytest.approx(roc_auc_score(last_y, last_s), abs=1e-12)
    assert recent["pr_auc"] == pytest.approx(average_precision_score(last_y, last_s), abs=1e-12)
    assert recent["logloss"] == pytest.approx(log_loss(last_y, last_s), abs=1e-9)
    assert recent["base_rate"] == pytest.approx(last_y.mean())
    assert recent["delay_p95_s"] == pytest.approx(60.0)


def test_since_start_bins_are_within_a_thousandth_of_sklearn() -> None:
    scores, labels = _outcomes(20_000, seed=1)
    online = OnlineQuality(window=100)
    for s, y in zip(scores, labels, strict=True):
        online.add(float(s), float(y), delay_ms=0)

    total = online.since_start()

    assert total["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-3)
    assert total["pr_auc"] == pytest.approx(average_precision_score(labels, scores), abs=1e-3)
    assert total["logloss"] == pytest.approx(log_loss(labels, scores), abs=1e-9)
    assert total["ece"] == pytest.approx(expected_calibration_error(scores, labels), abs=1e-3)


def test_ece_of_a_calibrated_and_a_miscalibrated_model() -> None:
    rng = np.random.default_rng(2)
    p = rng.random(50_000)
    y = (rng.random(50_000) < p).astype(float)

    assert expected_calibration_error(p, y) < 0.01
    assert expected_calibration_error(np.clip(p + 0.3, 0, 1), y) > 0.2


def test_psi_is_zero_for_equal_and_large_for_shifted_histograms() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert psi([0.9, 0.1], [0.1, 0.9]) > 0.25


def _windows(events: list[dict], size: int = 50) -> list[list[tuple]]:
    seen: dict[str, list[dict]] = {}
    out = []
    for event in events:
        window = seen.setdefault(event["user_id"], [])
        window.append(event)
        del window[:-size]
        out.append(events_profile(window))
    return out


def test_drift_alarm_after_the_drift_point_not_before() -> None:
    config = SimConfig(drift_at=0.5)
    point = START_MS + 0.5 * config.days * DAY_MS
    # the reference: warm windows of the same behaviour before the drift point (another seed)
    ref_events = simulate_events(300, seed=11)
    ref = [
        (e, w)
        for e, w in zip(ref_events, _windows(ref_events), strict=True)
        if point - 2 * DAY_MS <= e["ts"] < point
    ]
    reference = build_reference([w for _, w in ref], [0.1] * len(ref))
    events = simulate_events(300, seed=12, config=config)
    monitor = DriftMonitor(reference, window=2000)
    before = after = 0.0
    for event, window in zip(events, _windows(events), strict=True):
        monitor.add(window, 0.1)
        worst = max(monitor.psi().values())
        if point - DAY_MS <= event["ts"] < point:  # a day of warm windows before the drift
            before = max(before, worst)
        elif event["ts"] >= point + DAY_MS / 2:
            after = max(after, worst)

    assert before < 0.25 < after


def test_reference_round_trips(tmp_path: Path) -> None:
    reference = build_reference([[(0, "view", "a", None)]], [0.3])

    save_reference(tmp_path, reference)

    assert load_reference(tmp_path) == reference
    assert load_reference(tmp_path / "nothing") is None
