"""Model faults: a missing or corrupt bundle stops `bstream worker` at startup with one clear line;
an inference failure is retried, dead-lettered (`inference_failed`), and other batches go on.

The inference failure comes from the test-only hook in tests/faults/faultinject.py (a `bstream`
launcher that wraps `Runtime.load`): the real runtime serves every batch except those holding the
chosen item.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from stream import launcher
from stream.kafka.broker import EmbeddedBroker
from tests.faults import faultinject
from tests.faults.support import (
    Expected,
    PredictionWatcher,
    ProcessSampler,
    dlq_key,
    mib,
    record_result,
)
from tests.integration.worker_support import (
    BSTREAM,
    TEST_KEY,
    WorkerProcess,
    collect,
    new_env,
    produce,
)

T0 = 1_700_000_000_000
POISON_ITEM = "poison-item"


def _rewrite_meta(bundle: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads((bundle / "bundle.json").read_text())
    change(meta)
    (bundle / "bundle.json").write_text(json.dumps(meta))


def _garbage_model_with_matching_hash(bundle: Path) -> None:
    (bundle / "model.ts").write_bytes(b"\x00not a torchscript archive" * 100)
    digest = hashlib.sha256((bundle / "model.ts").read_bytes()).hexdigest()
    _rewrite_meta(bundle, lambda meta: meta["files"].update({"model.ts": digest}))


def _empty(bundle: Path) -> None:
    for path in bundle.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


CORRUPTIONS: dict[str, Callable[[Path], object]] = {
    "missing_dir": lambda b: shutil.rmtree(b),
    "empty_dir": _empty,
    "truncated_model": lambda b: (b / "model.ts").write_bytes((b / "model.ts").read_bytes()[:999]),
    "unparsable_meta": lambda b: (b / "bundle.json").write_text('{"version": '),
    "garbage_model_same_hash": _garbage_model_with_matching_hash,
    "no_tokenizer": lambda b: shutil.rmtree(b / "tokenizer"),
    "wrong_types_in_meta": lambda b: _rewrite_meta(b, lambda m: m.update(files=["model.ts"])),
    "no_labels": lambda b: _rewrite_meta(b, lambda m: m.update(labels=[])),
    "labels_do_not_fit_model": lambda b: _rewrite_meta(b, lambda m: m.update(labels=["a", "b"])),
    "model_config_gone": lambda b: _rewrite_meta(b, lambda m: m.update(model={})),
}
FAST = {"missing_dir", "truncated_model"}


@pytest.mark.parametrize(
    "corruption",
    [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in CORRUPTIONS],
)
def test_a_missing_or_corrupt_bundle_fails_at_startup_with_one_line(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path, corruption: str
) -> None:
    # A reachable broker: the worker checks Kafka before it loads the model, so only then does
    # a bundle whose hashes match but whose contents are wrong get as far as the model load.
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    CORRUPTIONS[corruption](bundle)
    env = {"BSTREAM_HMAC_KEY": TEST_KEY, "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    cmd = [
        str(BSTREAM),
        "worker",
        "--model",
        str(bundle),
        "--bootstrap",
        broker.bootstrap,
    ]

    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)

    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines[-5:]
    assert "bundle" in lines[0]


def event(user: str, i: int, item: str = "item") -> tuple[bytes, bytes]:
    payload = {"user_id": user, "event_type": "view", "ts": T0 + i * 1000, "item_id": f"{item}"}
    return user.encode(), orjson.dumps(payload)


@pytest.mark.integration
@pytest.mark.slow
def test_a_failing_inference_batch_is_retried_then_dead_lettered_and_others_go_on(
    broker: EmbeddedBroker, tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(faultinject.ENV, POISON_ITEM)
    monkeypatch.setattr(launcher, "BSTREAM", faultinject.faulty_bstream(tmp_path))
    wenv = new_env(broker.bootstrap)
    topic = wenv.settings.events_topic
    before = [event(f"a{u}", 1) for u in range(30)]
    poison = [event("victim", 2, POISON_ITEM)]
    after = [event(f"a{u}", 3) for u in range(30)] + [event(f"b{u}", 3) for u in range(30)]
    expected = Expected()
    for key, value in before + after:
        expected.add(wenv.user(key.decode()), orjson.loads(value))
    watcher = PredictionWatcher(broker.bootstrap, wenv.settings.predictions_topic)

    with WorkerProcess(wenv, tiny_bundle, tmp_path, name="inference") as worker:
        worker.wait_ready()
        sampler = ProcessSampler(worker.proc.pid)  # type: ignore[union-attr]
        produce(broker.bootstrap, topic, before)
        first = Expected(newest={wenv.user(k.decode()): T0 + 1000 for k, _ in before})
        watcher.wait_reflects(first, timeout=120, check_sizes=False)
        ((partition, offset),) = produce(broker.bootstrap, topic, poison)
        dlq = collect(broker.bootstrap, wenv.settings.dlq_topic, lambda got: len(got) >= 1, 120)
        produce(broker.bootstrap, topic, after)
        watcher.wait_reflects(expected, timeout=120)
        failures = worker.metric("bstream_inference_failures_total")
        dead = worker.metric("bstream_dlq_total", reason="inference_failed")
        alive = worker.proc is not None and worker.proc.poll() is None
        sampler.stop()
        assert worker.stop() == 0
    watcher.close()

    assert alive
    assert [(m.headers["error.code"], m.key, m.value) for m in dlq] == [
        ("inference_failed", dlq_key(poison[0][0]), poison[0][1])
    ]
    assert (dlq[0].headers["source.partition"], dlq[0].headers["source.offset"]) == (
        str(partition),
        str(offset),
    )
    assert failures == 3  # the first attempt and two retries
    assert dead == 1
    assert wenv.user("victim") not in watcher.latest
    assert "inference failed" in worker.log() and "InjectedFault" in worker.log()
    record_result(
        {
            "scenario": "model fault: inference exception",
            "runs": 1,
            "events": len(before) + 1 + len(after),
            "users_lost": len(watcher.missing(expected)),
            "duplicates": watcher.duplicates,
            "dlq": int(dead),
            "peak_rss_mib": mib(sampler.peak_rss),
            "time_to_recover_s": 0,
        }
    )
