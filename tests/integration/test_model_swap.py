"""Hot reload in a real worker: a champion promoted mid-stream, bad announcements, rollback.

The swap-under-load check replays events while a second bundle is promoted: every user ends
predicted with their newest event, each partition's predictions change version once and in order,
nothing is predicted twice, and the worker process never restarts. It prints the time from the
announcement to the first new-version prediction and the worker's RSS before, during and after.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from model.bundle import MODEL_FILE, sha256_file
from schemas.formats import event_json, read_rows
from stream.kafka.broker import EmbeddedBroker
from stream.lifecycle import announce, promote, rollback
from stream.registry import Announcement, champion_after, now_ms, read_state
from tests.conftest import TAOBAO_SLICE, need_shared
from tests.integration.worker_support import (
    Msg,
    WorkerEnv,
    WorkerProcess,
    collect,
    latest_by_user,
    new_env,
    produce,
    reflects,
)

pytestmark = pytest.mark.integration
T0 = 1_700_000_000_000


def version_of(bundle: Path) -> str:
    return str(json.loads((bundle / "bundle.json").read_text())["version"])


def synthetic_events(n: int, users: int = 300) -> list[dict[str, Any]]:
    kinds = ("view", "view", "click", "cart", "fav", "purchase")
    return [
        {
            "user_id": f"u{i % users}",
            "event_type": kinds[i % 6],
            "ts": T0 + i * 1000,
            "item_id": f"i{i % 13}",
        }
        for i in range(n)
    ]


class RssSampler:
    """Samples a process's resident set size every 20 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples = [(time.monotonic(), self.read())]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def read(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self.stopped.wait(0.02):
            try:
                self.samples.append((time.monotonic(), self.read()))
            except OSError:
                return

    def peak(self, since: float, until: float) -> int:
        return max((rss for t, rss in self.samples if since <= t <= until), default=0)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # a /metrics read timed out on a busy machine: retry
            if condition():
                return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def health(worker: WorkerProcess) -> dict[str, Any]:
    return dict(json.loads(worker._get("/health")[1]))


def check_versions_by_partition(predictions: list[Msg], old: str, new: str) -> int:
    """Each partition: old* then new* in offset order; returns how many partitions changed."""
    changed = 0
    for partition in {m.partition for m in predictions}:
        seq = [
            orjson.loads(m.value or b"")["model_version"]
            for m in sorted(predictions, key=lambda m: m.offset)
            if m.partition == partition
        ]
        assert set(seq) <= {old, new}, set(seq)
        runs = [version for version, _ in itertools.groupby(seq)]
        assert runs in ([old], [new], [old, new]), f"partition {partition}: {runs}"
        changed += runs == [old, new]
    return changed


def swap_under_load(
    broker: EmbeddedBroker,
    first: Path,
    second: Path,
    workdir: Path,
    events: list[dict[str, Any]],
) -> dict[str, Any]:
    """Replay `events` in three parts, promoting `second` after the first; check; figures."""
    wenv = new_env(broker.bootstrap)
    settings = wenv.settings
    old, new = version_of(first), version_of(second)
    newest: dict[str, int] = {}
    for event in events:
        user = wenv.user(event["user_id"])
        newest[user] = max(newest.get(user, 0), event["ts"])
    records = [(e["user_id"].encode(), event_json(e)) for e in events]
    third = len(records) // 3
    with WorkerProcess(wenv, first, workdir) as worker:
        worker.wait_ready(timeout=300)  # generous: a busy shared machine
        assert worker.proc is not None
        pid = worker.proc.pid
        rss = RssSampler(pid)
        produce(broker.bootstrap, settings.events_topic, records[:third])
        collect(broker.bootstrap, settings.predictions_topic, lambda r: len(r) > 0)
        before = rss.read()
        began = time.monotonic()
        feeder = threading.Thread(
            target=produce,
            args=(broker.bootstrap, settings.events_topic, records[third : 2 * third]),
        )
        made = promote(str(second), settings)  # the worker swaps while part two streams in
        feeder.start()
        swapped = lambda: worker.metric(  # noqa: E731
            "bstream_model_swaps_total", role="champion", outcome="ok"
        )
        wait_for(lambda: swapped() == 1, "the swap")
        feeder.join()
        produce(broker.bootstrap, settings.events_topic, records[2 * third :])
        predictions = collect(
            broker.bootstrap, settings.predictions_topic, reflects(newest), timeout=300
        )
        ended = time.monotonic()
        time.sleep(3)  # a few registry ticks: the replaced model is collected
        after = rss.read()
        rss.stop()

        decoded = [orjson.loads(m.value or b"") for m in predictions]
        latest = latest_by_user(predictions)
        assert set(latest) == set(newest)  # 0 users lost
        assert all(latest[u]["last_event_ts"] == ts for u, ts in newest.items())
        assert all(isinstance(p["model_version"], str) for p in decoded)
        assert check_versions_by_partition(predictions, old, new) >= 1
        seen = [(p["user"], p["window_size"], p["last_event_ts"]) for p in decoded]
        assert len(seen) == len(set(seen))  # nothing predicted twice
        assert worker.metric("bstream_predictions_total") == len(predictions)
        assert worker.metric("bstream_events_total") == len(events)
        assert worker.proc.poll() is None and worker.proc.pid == pid  # never restarted
        assert worker.log().count("model swapped") == 1
        assert worker.log().count("bstream worker: model") == 1
        assert health(worker)["lifecycle"]["champion"] == new
        assert health(worker)["model_version"] == new
        first_new = min(p["predicted_at"] for p in decoded if p["model_version"] == new)
        return {
            "events": len(events),
            "users": len(newest),
            "predictions": len(predictions),
            "old_version_predictions": sum(p["model_version"] == old for p in decoded),
            "announce_to_first_new_prediction_ms": first_new - made.promoted_at,
            "load_and_warm_up_s": worker.metric("bstream_model_load_seconds"),
            "rss_before_mb": round(before / 2**20, 1),
            "rss_peak_during_swap_mb": round(rss.peak(began, ended) / 2**20, 1),
            "rss_after_mb": round(after / 2**20, 1),
        }


def report(figures: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print("\nswap under load:", json.dumps(figures))


def test_swap_under_load(
    broker: EmbeddedBroker,
    tiny_bundle: Path,
    second_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    report(
        swap_under_load(broker, tiny_bundle, second_bundle, tmp_path, synthetic_events(3000)),
        capsys,
    )


@pytest.mark.slow
def test_swap_under_load_taobao_20k(
    broker: EmbeddedBroker,
    tiny_bundle: Path,
    second_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = itertools.islice(read_rows(need_shared(TAOBAO_SLICE), "taobao"), 20_000)
    events = [row.event for row in rows if row.event is not None]
    report(swap_under_load(broker, tiny_bundle, second_bundle, tmp_path, events), capsys)


def hand_announce(wenv: WorkerEnv, bundle: Path, sha256: str | None = None) -> None:
    """Announce a bundle as champion without `promote`'s checks (as a careless operator might)."""
    meta = json.loads((bundle / "bundle.json").read_text())
    made = Announcement(
        "champion",
        bundle.name,
        meta["version"],
        str(bundle),
        sha256 or sha256_file(bundle / MODEL_FILE),
        meta["labels"],
        int(meta["encoding"]["window"]),
        "test",
        now_ms(),
    )
    announce(wenv.settings, champion_after(read_state(wenv.settings).champion, made))


def test_bad_announcements_keep_the_old_model_and_rollback_swaps_back(
    broker: EmbeddedBroker, tiny_bundle: Path, second_bundle: Path, tmp_path: Path
) -> None:
    wenv = new_env(broker.bootstrap)
    settings = wenv.settings
    old, new = version_of(tiny_bundle), version_of(second_bundle)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(second_bundle, corrupt)
    (corrupt / MODEL_FILE).write_bytes(b"garbage, not TorchScript")
    failed = lambda w: w.metric(  # noqa: E731
        "bstream_model_swaps_total", role="champion", outcome="failed"
    )
    ok = lambda w: w.metric("bstream_model_swaps_total", role="champion", outcome="ok")  # noqa: E731
    events = synthetic_events(200, users=20)

    promote(str(tiny_bundle), settings)  # the bundle the worker starts on: the rollback target
    with WorkerProcess(wenv, tiny_bundle, tmp_path) as worker:
        worker.wait_ready(timeout=300)  # generous: a busy shared machine
        hand_announce(wenv, corrupt)  # its sha256 matches: the load itself fails
        wait_for(lambda: failed(worker) == 1, "the failed load")
        hand_announce(wenv, second_bundle, sha256="0" * 64)  # the files do not match
        wait_for(lambda: failed(worker) == 2, "the sha256 refusal")
        produce(wenv.bootstrap, settings.events_topic, [
            (e["user_id"].encode(), event_json(e)) for e in events[:100]
        ])  # fmt: skip
        served = collect(wenv.bootstrap, settings.predictions_topic, lambda r: len(r) > 0)
        assert {orjson.loads(m.value or b"")["model_version"] for m in served} == {old}
        status = health(worker)
        assert status["status"] == "ready" and status["model_version"] == old
        assert "sha256 mismatch" in status["lifecycle"]["last_error"]
        log = worker.log()
        assert log.count("model swap failed, keeping") == 2
        assert "corrupt bundle" in log

        promote(str(second_bundle), settings)
        wait_for(lambda: ok(worker) == 1, "the swap")
        assert (
            health(worker)["model_version"] == new
            and health(worker)["lifecycle"]["last_error"] is None
        )
        rollback(settings)
        wait_for(lambda: ok(worker) == 2, "the swap back")
        produce(wenv.bootstrap, settings.events_topic, [
            (e["user_id"].encode(), event_json(e)) for e in events[100:]
        ])  # fmt: skip
        newest = {wenv.user(e["user_id"]): e["ts"] for e in events}
        predictions = collect(wenv.bootstrap, settings.predictions_topic, reflects(newest))
        assert {p["model_version"] for p in latest_by_user(predictions).values()} == {old}
        assert worker.proc is not None and worker.proc.poll() is None
        worker.stop()

    # A worker that starts reads the champion from the registry: --model is only the fallback.
    promote(str(second_bundle), settings)
    with WorkerProcess(wenv, tiny_bundle, tmp_path, name="restarted") as restarted:
        restarted.wait_ready(timeout=300)  # generous: a busy shared machine
        assert health(restarted)["model_version"] == new
        assert health(restarted)["lifecycle"]["from_registry"] is True
        assert f"model {new}" in restarted.log()


def test_a_challenger_scores_in_shadow_only(
    broker: EmbeddedBroker, tiny_bundle: Path, second_bundle: Path, tmp_path: Path
) -> None:
    wenv = new_env(broker.bootstrap)
    settings = wenv.settings
    old, new = version_of(tiny_bundle), version_of(second_bundle)
    kinds = ("view", "click", "view", "cart", "view", "purchase")
    events = [  # 20 events a minute apart per user, with purchases: outcomes get labels
        {"user_id": f"u{u}", "event_type": kinds[(u + j) % 6], "ts": T0 + j * 60_000,
         "item_id": f"i{(u + j) % 5}"}
        for j in range(20)
        for u in range(30)
    ]  # fmt: skip
    newest = {wenv.user(e["user_id"]): e["ts"] for e in events}
    loaded = lambda w: w.metric(  # noqa: E731
        "bstream_model_swaps_total", role="challenger", outcome="ok"
    )

    with WorkerProcess(wenv, tiny_bundle, tmp_path) as worker:
        worker.wait_ready(timeout=300)  # generous: a busy shared machine
        promote(str(second_bundle), settings, role="challenger", share=1.0)
        wait_for(lambda: loaded(worker) == 1, "the challenger")
        produce(wenv.bootstrap, settings.events_topic, [
            (e["user_id"].encode(), event_json(e)) for e in events
        ])  # fmt: skip
        main = collect(wenv.bootstrap, settings.predictions_topic, reflects(newest))
        shadow = collect(wenv.bootstrap, settings.shadow_topic, reflects(newest))
        shadow_count = worker.metric("bstream_shadow_predictions_total", model_version=new)
        status = health(worker)["lifecycle"]
        outcomes = collect(
            wenv.bootstrap,
            settings.outcomes_topic,
            lambda r: {orjson.loads(m.value or b"")["model_version"] for m in r} == {old, new},
        )
        per_version = {
            v: worker.metric("bstream_outcomes_total", model_version=v) for v in (old, new)
        }

    assert {orjson.loads(m.value or b"")["model_version"] for m in main} == {old}
    assert {orjson.loads(m.value or b"")["model_version"] for m in shadow} == {new}
    assert set(latest_by_user(shadow)) == set(newest)
    assert shadow_count == len(shadow) == len(main)  # share 1.0: every batch, same targets
    assert status["champion"] == old and status["challenger"] == new
    # the challenger's outcomes are joined like the champion's: same windows, same labels
    by_version: dict[str, dict[tuple[str, int], Any]] = {old: {}, new: {}}
    for m in outcomes:
        o = orjson.loads(m.value or b"")
        by_version[o["model_version"]][(o["user"], o["last_event_ts"])] = o["labels"]
    shared = by_version[old].keys() & by_version[new].keys()
    assert shared and all(by_version[old][k] == by_version[new][k] for k in shared)
    assert per_version[old] > 0 and per_version[new] > 0


def drain(wenv: WorkerEnv, topic: str, events: list[dict[str, Any]]) -> tuple[float, list[Msg]]:
    """Produce a burst; seconds until every user's prediction reflects their newest event."""
    newest = {wenv.user(e["user_id"]): e["ts"] for e in events}
    started = time.monotonic()
    produce(wenv.bootstrap, wenv.settings.events_topic, [
        (e["user_id"].encode(), event_json(e)) for e in events
    ])  # fmt: skip
    records = collect(wenv.bootstrap, topic, reflects(newest), timeout=600)
    return time.monotonic() - started, [
        m for m in records if orjson.loads(m.value or b"")["user"] in newest
    ]


@pytest.mark.slow
def test_shadow_cost_bench(
    broker: EmbeddedBroker,
    tiny_bundle: Path,
    second_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Intake and latency: champion alone vs champion + a challenger at 100% (same worker)."""
    wenv = new_env(broker.bootstrap)
    n = 6000
    alone_events = synthetic_events(n, users=600)
    shadow_events = [
        {**e, "user_id": "s" + e["user_id"], "ts": e["ts"] + 10**7} for e in alone_events
    ]
    figures: dict[str, Any] = {"events": n}
    with WorkerProcess(wenv, tiny_bundle, tmp_path) as worker:
        worker.wait_ready(timeout=300)  # generous: a busy shared machine
        drain(wenv, wenv.settings.predictions_topic, synthetic_events(300, users=30))  # warm
        for name, events in (("alone", alone_events), ("with_shadow_100pct", shadow_events)):
            if name != "alone":
                promote(str(second_bundle), wenv.settings, role="challenger", share=1.0)
                wait_for(
                    lambda: (
                        worker.metric("bstream_model_swaps_total", role="challenger", outcome="ok")
                        == 1
                    ),
                    "the challenger",
                )
            seconds, records = drain(wenv, wenv.settings.predictions_topic, events)
            latency = sorted(orjson.loads(m.value or b"")["latency_ms"] for m in records)
            figures[name] = {
                "events_per_s": round(n / seconds, 1),
                "latency_p50_ms": latency[len(latency) // 2],
                "latency_p95_ms": latency[int(len(latency) * 0.95)],
            }
    with capsys.disabled():
        print("\nshadow cost:", json.dumps(figures))
    assert (
        figures["alone"]["events_per_s"] > 0 and figures["with_shadow_100pct"]["events_per_s"] > 0
    )
