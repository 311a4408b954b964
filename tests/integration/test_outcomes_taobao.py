"""Acceptance (slow): replay taobao_users (800 users, grouped by user) through a real worker.

Outcome labels equal the offline label function; live AUC/PR-AUC gauges equal scikit-learn on the
published outcomes; every prediction without an outcome is explained; a kill -9 mid-replay loses no
pending outcome. BSTREAM_ACCEPT_BUNDLE picks a bundle trained on the file (default: the tiny one).
Run with `-s` to see the figures.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from schemas.formats import event_json, read_events
from stream.kafka.broker import EmbeddedBroker
from stream.outcome_check import CheckReport, check_outcomes, offline_examples
from tests.conftest import TAOBAO_USERS, need_shared
from tests.integration.test_outcomes import _decode, _newest, _settled
from tests.integration.worker_support import (
    WorkerEnv,
    WorkerProcess,
    collect,
    new_env,
    produce,
    reflects,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]
HORIZON_MS = 30 * 60_000
ARGS = ("--max-batch", "16")  # the file is grouped by user: ~one prediction per 16 events


def _bundle(tiny_bundle: Path) -> Path:
    chosen = os.environ.get("BSTREAM_ACCEPT_BUNDLE")
    return Path(chosen) if chosen else tiny_bundle


def _replay(wenv: WorkerEnv, bootstrap: str, events: list[dict[str, Any]]) -> None:
    produce(
        bootstrap,
        wenv.settings.events_topic,
        [(e["user_id"].encode(), event_json(e)) for e in events],
    )


def _report(
    wenv: WorkerEnv, events: list[dict[str, Any]], worker: WorkerProcess, name: str
) -> tuple[CheckReport, list[dict[str, Any]]]:
    predictions = collect(
        wenv.bootstrap,
        wenv.settings.predictions_topic,
        reflects(_newest(wenv, events)),
        timeout=1800,
    )
    outcomes = _decode(_settled(worker, wenv, timeout=600))
    labels = ["purchase"]
    expected, times = offline_examples(events, wenv.user, HORIZON_MS, labels)
    report = check_outcomes(outcomes, expected, labels, _decode(predictions), times, HORIZON_MS)
    pending = worker.metric("bstream_outcomes_pending")
    dropped = worker.metric("bstream_outcomes_dropped_total")
    print(f"\n[{name}] " + "\n".join(report.lines()))
    print(f"[{name}] pending gauge {pending:.0f}, dropped {dropped:.0f}")
    return report, outcomes


def test_taobao_users_replay(broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path) -> None:
    events = list(read_events(need_shared(TAOBAO_USERS), "taobao"))
    wenv = new_env(broker.bootstrap)
    with WorkerProcess(wenv, _bundle(tiny_bundle), tmp_path, *ARGS) as worker:
        worker.wait_ready(timeout=300)
        _replay(wenv, broker.bootstrap, events)
        report, outcomes = _report(wenv, events, worker, "replay")
        unique = list({o["outcome_id"]: o for o in outcomes}.values())
        version = unique[0]["model_version"]
        y = np.array([o["labels"]["purchase"] for o in unique])
        s = np.array([o["scores"]["purchase"] for o in unique])
        time.sleep(3)
        live = {
            name: worker.metric(f"bstream_live_{name}", model_version=version)
            for name in ("auc", "pr_auc", "auc_since_start", "pr_auc_since_start")
        }
    sk_auc, sk_pr = roc_auc_score(y, s), average_precision_score(y, s)
    print(
        f"[replay] {len(y)} outcomes, base rate {y.mean():.4f}; "
        f"sklearn AUC {sk_auc:.4f} PR-AUC {sk_pr:.4f}; live {live}"
    )

    assert report.compared > 1000 and report.mismatches == 0 and report.unknown == 0
    assert "other (dropped by the bound or in flight)" not in report.reasons
    window = min(len(y), 5000)
    assert live["auc_since_start"] == pytest.approx(sk_auc, abs=0.005)
    assert live["pr_auc_since_start"] == pytest.approx(sk_pr, abs=0.005)
    if len(y) <= window:
        assert live["auc"] == pytest.approx(sk_auc, abs=0.005)
        assert live["pr_auc"] == pytest.approx(sk_pr, abs=0.005)


def test_taobao_users_replay_survives_kill_9(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path
) -> None:
    events = list(read_events(need_shared(TAOBAO_USERS), "taobao"))
    wenv = new_env(broker.bootstrap)
    bundle = _bundle(tiny_bundle)
    with WorkerProcess(wenv, bundle, tmp_path, *ARGS, name="first") as first:
        first.wait_ready(timeout=300)
        _replay(wenv, broker.bootstrap, events)
        collect(
            broker.bootstrap, wenv.settings.outcomes_topic, lambda r: len(r) >= 1500, timeout=900
        )
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        killed_at = len(collect(broker.bootstrap, wenv.settings.outcomes_topic, lambda r: True))
    with WorkerProcess(wenv, bundle, tmp_path, *ARGS, name="second") as second:
        second.wait_ready(timeout=600)
        report, _ = _report(wenv, events, second, f"kill -9 after {killed_at} outcomes")

    assert report.compared > 1000 and report.mismatches == 0 and report.unknown == 0
    assert "other (dropped by the bound or in flight)" not in report.reasons
