"""The closed loop on a drifting simulated stream: drop, retrain, win, swap, recover.

A champion of the pre-drift behaviour (fine-tuned from the tiny bundle, with an aggregates part,
as `train` makes them) serves a real worker process on a real broker; the stream is
`simulate --drift-at 0.5`. Then, each figure printed for the note:

1. its live PR-AUC (the worker's gauge, and its outcomes by period) drops after the drift point,
   and the PSI alarm fires after the drift point and not before it (issue 13's drift check);
2. `bstream retrain --source outcomes` on the post-drift outcomes produces a candidate,
3. which beats the champion on the newest held-out slice (paired bootstrap CI above 0);
4. it is promoted and swapped in with no restart (same pid, same instance id); the old champion
   is announced as a shadow challenger, so both score the same later windows;
5. live PR-AUC recovers: on those later windows the new champion beats the old one, and its own
   post-drift figure is above the old champion's after the drift.

Events are produced day-half by day-half (the drift point, day 3.5, is a boundary), and within
one, user by user in turn: a batch then rarely holds two events of one user, so nearly every
event gets its own prediction and outcome, as in live traffic where users act in parallel.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from model.metrics import pr_auc
from model.retrain import retrain
from schemas.formats import event_json
from stream.kafka.broker import EmbeddedBroker
from stream.lifecycle import promote
from stream.simulate import START_MS, SimConfig, simulate_events
from tests.integration.test_model_swap import version_of
from tests.integration.worker_support import (
    Msg,
    WorkerEnv,
    WorkerProcess,
    collect,
    new_env,
    produce,
    reflects,
)
from tests.stream.kafka_helpers import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3000)]
HALF_DAY_MS = 12 * 3_600_000
PSI_ALARM = 2  # bstream_drift_level: 2 = over BSTREAM_PSI_ALARM


def interleaved(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Half-day by half-day; within one, users in turn (each user's own order kept)."""
    rank: dict[tuple[int, str], int] = {}
    keyed = []
    for n, event in enumerate(events):
        half = (event["ts"] - START_MS) // HALF_DAY_MS
        k = rank[(half, event["user_id"])] = rank.get((half, event["user_id"]), -1) + 1
        keyed.append(((half, k, n), event))
    return [event for _, event in sorted(keyed, key=lambda pair: pair[0])]


def stream_part(wenv: WorkerEnv, events: list[dict[str, Any]]) -> None:
    """Produce events and wait until every user's prediction reflects their newest one."""
    newest = {wenv.user(e["user_id"]): e["ts"] for e in events}
    ordered = interleaved(events)
    records = [(e["user_id"].encode(), event_json(e)) for e in ordered]
    produce(wenv.bootstrap, wenv.settings.events_topic, records)
    collect(wenv.bootstrap, wenv.settings.predictions_topic, reflects(newest), timeout=900)


def settled(wenv: WorkerEnv, quiet_s: float = 4.0) -> list[dict[str, Any]]:
    """The outcomes topic once no new record came for `quiet_s` seconds."""
    seen: list[int] = []

    def quiet(records: list[Msg]) -> bool:
        seen.append(len(records))
        polls = int(quiet_s / 0.3)
        return len(seen) > polls and seen[-1] > 0 and seen[-1] == seen[-1 - polls]

    records = collect(wenv.bootstrap, wenv.settings.outcomes_topic, quiet, timeout=300)
    unique = {}
    for record in records:
        outcome = orjson.loads(record.value or b"")
        unique[outcome["outcome_id"]] = outcome
    return list(unique.values())


def period_pr_auc(
    outcomes: list[dict[str, Any]], version: str, since: int, until: int
) -> tuple[float, int]:
    """PR-AUC (and count) of the version's outcomes for predictions made in [since, until)."""
    picked = [
        o for o in outcomes if o["model_version"] == version and since <= o["last_event_ts"] < until
    ]
    y = np.array([o["labels"]["purchase"] for o in picked], dtype=float)
    s = np.array([o["scores"]["purchase"] for o in picked])
    value = pr_auc(y, s) if 0 < y.sum() < len(y) else float("nan")
    return round(value, 4), len(picked)


def paired_pr_auc(outcomes: list[dict[str, Any]], new: str, old: str, since: int) -> dict[str, Any]:
    """Both versions' PR-AUC on the same windows (scored by both: champion and shadow)."""
    by = {
        v: {(o["user"], o["last_event_ts"]): o for o in outcomes if o["model_version"] == v}
        for v in (new, old)
    }
    common = [k for k in by[new] if k in by[old] and k[1] >= since]
    y = np.array([by[new][k]["labels"]["purchase"] for k in common], dtype=float)
    out: dict[str, Any] = {"windows": len(common), "positives": int(y.sum())}
    for name, v in (("new", new), ("old", old)):
        s = np.array([by[v][k]["scores"]["purchase"] for k in common])
        out[name] = round(pr_auc(y, s), 4) if 0 < y.sum() < len(y) else float("nan")
    return out


def drift_level(worker: WorkerProcess, version: str) -> tuple[float, dict[str, float]]:
    """The worst bstream_drift_level of the version and its PSI per feature."""
    text = worker.metrics_text()
    levels, psi = [], {}
    for line in text.splitlines():
        if f'model_version="{version}"' not in line:
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("bstream_drift_level{"):
            levels.append(float(value))
        elif name.startswith("bstream_drift_psi{"):
            psi[name.split('feature="')[1].split('"')[0]] = round(float(value), 3)
    return max(levels, default=-1.0), psi


def wait_for(check: Callable[[], bool], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def closed_loop(
    broker: EmbeddedBroker,
    tiny_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    users: int,
    train_windows: int,
    source: str = "events",
    strict: bool = False,
) -> dict[str, Any]:
    config = SimConfig(drift_at=0.5)
    events = simulate_events(users, seed=11, config=config)
    drift = int(config.drift_ms or 0)
    end = events[-1]["ts"] + 1
    split = drift + (end - drift) * 3 // 4  # post-drift: the first 3/4 retrain, the rest checks
    pre = [e for e in events if e["ts"] < drift]
    post_a = [e for e in events if drift <= e["ts"] < split]
    post_b = [e for e in events if e["ts"] >= split]
    champion = retrain(
        pre, tiny_bundle, tmp_path / "champion", budget_minutes=20, margin=-1,
        max_train=train_windows, epochs=1, add_fusion=True,
    ).candidate  # fmt: skip
    old = version_of(champion)
    wenv = new_env(broker.bootstrap)
    promote(str(champion), wenv.settings)
    # one event per prediction (see the module doc); windows as long as the encoder's, so the
    # window-length histogram compares like with like; quality and drift over the last 2000
    monkeypatch.setenv("BSTREAM_MAX_BATCH", "32")
    monkeypatch.setenv("BSTREAM_WINDOW_SIZE", "20")
    monkeypatch.setenv("BSTREAM_QUALITY_WINDOW", "2000")
    figures: dict[str, Any] = {"users": users, "events": len(events), "drift_ts": drift}
    with WorkerProcess(wenv, champion, tmp_path) as worker:
        worker.wait_ready(timeout=600)  # a busy shared machine: imports alone can take minutes
        assert worker.proc is not None
        pid, instance = worker.proc.pid, json.loads(worker.get("/health")[1]).get("instance_id")

        stream_part(wenv, pre)
        settled(wenv)
        worker_pre = worker.metric("bstream_live_pr_auc", model_version=old)
        level_pre, psi_pre = drift_level(worker, old)
        stream_part(wenv, post_a)
        outcomes = settled(wenv)
        worker_post = worker.metric("bstream_live_pr_auc", model_version=old)
        level_post, psi_post = drift_level(worker, old)
        figures["1_drop"] = {
            "live_pr_auc_gauge_before": round(worker_pre, 4),
            "live_pr_auc_gauge_after": round(worker_post, 4),
            "outcomes_pr_auc_before": period_pr_auc(outcomes, old, 0, drift),
            "outcomes_pr_auc_after": period_pr_auc(outcomes, old, drift, split),
            "drift_level_before": level_pre,
            "drift_level_after": level_post,
            "psi_before": psi_pre,
            "psi_after": psi_post,
        }

        result = run_cli(
            "retrain",
            "--source", source,
            "--since-ms", str(drift),
            "--until-ms", str(split),
            "--out", str(tmp_path / "candidate"),
            "--budget-min", "20",
            "--max-train", str(train_windows),
            "--epochs", "1",
            "--margin", "0",
            env={
                **{k: v for k, v in wenv.env(tmp_path).items() if k.startswith("BSTREAM_")},
                "BSTREAM_DATA_DIR": str(tmp_path / "retrain"),
            },
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        report = json.loads(result.output.strip().splitlines()[-1])
        new = report["version"]
        kept = (
            "decision", "test_windows", "test_positives", "pr_auc_candidate", "pr_auc_champion",
            "pr_auc_diff", "pr_auc_diff_ci95", "n_train", "linear", "train_stopped", "seconds",
        )  # fmt: skip
        figures["2_3_retrain"] = {k: report[k] for k in kept}
        if report["decision"] != "champion":  # a point win only: the operator promotes it
            promote(str(tmp_path / "candidate"), wenv.settings)
        promote(str(champion), wenv.settings, role="challenger")  # the old one, in shadow
        ok = {"outcome": "ok"}
        wait_for(
            lambda: (
                worker.metric("bstream_model_swaps_total", role="champion", **ok) == 1
                and worker.metric("bstream_model_swaps_total", role="challenger", **ok) == 1
            ),
            "the swap and the shadow",
        )
        alive = worker.proc.poll() is None and worker.proc.pid == pid
        same = json.loads(worker.get("/health")[1]).get("instance_id") == instance
        figures["4_swap"] = {"same_pid": alive, "same_instance": same}

        stream_part(wenv, post_b)
        outcomes = settled(wenv)
        figures["5_recover"] = {
            "same_later_windows": paired_pr_auc(outcomes, new, old, split),
            "new_post_drift_all": period_pr_auc(outcomes, new, split, end),
            "live_pr_auc_gauge_new": round(
                worker.metric("bstream_live_pr_auc", model_version=new), 4
            ),
            "live_pr_auc_gauge_old_shadow": round(
                worker.metric("bstream_live_pr_auc", model_version=old), 4
            ),
        }
        assert worker.proc.poll() is None and worker.proc.pid == pid
    print("\nclosed loop:", json.dumps(figures))
    drop = figures["1_drop"]
    # 1. the drift check (issue 13): the alarm fires after the drift point, not before it, and
    # the live PR-AUC drops; the same drop in the outcomes by period
    assert drop["drift_level_before"] < PSI_ALARM <= drop["drift_level_after"]
    assert drop["live_pr_auc_gauge_after"] < drop["live_pr_auc_gauge_before"]
    assert drop["outcomes_pr_auc_after"][0] < drop["outcomes_pr_auc_before"][0]
    # 2-3. a candidate from the post-drift data that wins on the newest held-out slice: on the
    # point estimate in the fast version, on the whole 95% CI (so retrain promotes it) in full
    assert report["pr_auc_diff"] > 0, report
    if strict:
        assert report["decision"] == "champion" and report["pr_auc_diff_ci95"][0] > 0, report
    # 4. swapped with no restart
    assert figures["4_swap"] == {"same_pid": True, "same_instance": True}
    # 5. recovered: better than the old champion (in shadow) on the same later windows, and above
    # the old champion's live figure after the drift
    recover = figures["5_recover"]
    assert recover["same_later_windows"]["new"] > recover["same_later_windows"]["old"]
    assert recover["live_pr_auc_gauge_new"] > drop["live_pr_auc_gauge_after"]
    return figures


def test_closed_loop(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed_loop(broker, tiny_bundle, tmp_path, monkeypatch, users=240, train_windows=800)


@pytest.mark.slow
def test_closed_loop_full(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed_loop(
        broker, tiny_bundle, tmp_path, monkeypatch, users=500, train_windows=4000, strict=True
    )
