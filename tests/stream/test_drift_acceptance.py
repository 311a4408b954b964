"""Drift check (pure, real baseline model): with `simulate --drift-at 0.5` the PSI alarm fires after
the drift point and not before it, the live PR-AUC of the outcomes drops, and a model re-fitted on
post-drift windows learns the new behaviour."""

from __future__ import annotations

import numpy as np

from model.baselines import fit_logreg
from model.data import LabelledData, label_events
from model.drift import DriftMonitor, build_reference, events_profile
from model.features import window_features
from model.metrics import pr_auc
from stream.online_metrics import OnlineQuality
from stream.outcomes import Pending, UserPending, observe, remember
from stream.simulate import DAY_MS, START_MS, SimConfig, simulate_events
from stream.windows import entry_from_event

HORIZON = 30 * 60_000
PSI_ALARM = 0.25


def test_psi_alarm_after_the_drift_point_and_live_pr_auc_drops() -> None:
    # A model of the pre-drift behaviour (logistic regression on window features), with the
    # drift reference of its validation windows, as `bstream train` stores it. The simulated
    # world starts every user's history at day 0, so window length and repeats grow all week: the
    # reference must have the history depth the monitor sees in the day before the drift point.
    # Its 2000 predictions then reach back to about day 1.3, so the split puts val at days
    # 1.9-3.8 (with val at days 2.6-3.8 only, the start of that day read as drift: PSI 0.256).
    train = label_events(simulate_events(200, seed=21), horizon_min=30, train=0.25, val=0.25)
    xy = {
        split: (
            np.array([window_features(train.window(e, 50)) for e in train.split(split)]),
            np.array([e.labels[0] for e in train.split(split)]),
        )
        for split in ("train", "val")
    }
    model = fit_logreg(*xy["train"], *xy["val"])
    val_windows = [train.window(e, 50) for e in train.split("val")]
    reference = build_reference(
        [events_profile(w) for w in val_windows], list(model.predict(xy["val"][0]))
    )
    # The live stream drifts halfway; the worker's path in miniature (one event per batch).
    config = SimConfig(drift_at=0.5)
    point = START_MS + 0.5 * config.days * DAY_MS
    events = simulate_events(200, seed=22, config=config)
    windows: dict[str, list[dict]] = {}
    features, profiles = [], []
    for event in events:
        window = windows.setdefault(event["user_id"], [])
        window.append(event)
        del window[:-50]
        features.append(window_features(window))
        profiles.append(events_profile(window))
    scores = model.predict(np.array(features))
    monitor = DriftMonitor(reference, window=2000)
    before_q, after_q = OnlineQuality(100_000), OnlineQuality(100_000)
    psi_before = psi_after = 0.0
    states: dict[str, UserPending] = {}
    for event, profile, score in zip(events, profiles, scores, strict=True):
        state = states.setdefault(event["user_id"], UserPending(0, 0))
        eid = entry_from_event(event)[5]
        for done in observe(state, [(event["ts"], event["event_type"], eid)]):
            ts = done.pending.last_event_ts
            quality = before_q if ts < point else after_q if ts >= point + DAY_MS / 2 else None
            if quality is not None:
                quality.add(done.pending.scores["purchase"], done.labels["purchase"], 0)
        if event["event_type"] != "purchase":
            pending = Pending(event["ts"], 0, "v", HORIZON, {"purchase": float(score)}, {}, [eid])
            remember(state, pending, max_pending=64)
        monitor.add(profile, float(score))
        worst = max(monitor.psi().values())
        if point - DAY_MS <= event["ts"] < point:  # warm windows, the day before the drift
            psi_before = max(psi_before, worst)
        elif event["ts"] >= point + DAY_MS / 2:
            psi_after = max(psi_after, worst)
    before, after = before_q.recent(), after_q.recent()
    print(f"PSI max before {psi_before:.3f} after {psi_after:.3f}; before {before}; after {after}")

    assert psi_before < PSI_ALARM < psi_after
    assert after["pr_auc"] < before["pr_auc"] and after["auc"] < before["auc"]


def _xy(data: LabelledData, split: str) -> tuple[np.ndarray, np.ndarray]:
    examples = data.split(split)
    x = np.array([window_features(data.window(e, 50)) for e in examples])
    return x, np.array([e.labels[0] for e in examples])


def test_a_model_refitted_after_the_drift_beats_the_pre_drift_model_on_later_windows() -> None:
    before = label_events(simulate_events(150, seed=31), horizon_min=30, train=0.6, val=0.2)
    old = fit_logreg(*_xy(before, "train"), *_xy(before, "val"))
    # drift_at=0: every session follows the drifted behaviour; test is the latest 30% of it
    after = label_events(
        simulate_events(300, seed=32, config=SimConfig(drift_at=0.0)), 30, train=0.5, val=0.2
    )
    new = fit_logreg(*_xy(after, "train"), *_xy(after, "val"))

    x, y = _xy(after, "test")
    old_pr, new_pr = pr_auc(y, old.predict(x)), pr_auc(y, new.predict(x))
    print(f"post-drift test PR-AUC: pre-drift model {old_pr:.3f}, re-fitted {new_pr:.3f}")
    assert new_pr > old_pr + 0.05
