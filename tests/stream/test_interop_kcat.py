"""kcat (a third-party librdkafka client) reads the replayed events from the embedded broker.

kcat 1.7.1 on Debian bookworm links librdkafka 2.0.2, which cannot parse Tansu's ApiVersions v3
reply: Tansu writes every KIP-482 tagged field, including FinalizedFeaturesEpoch (8 bytes), and
2.0.2 mis-skips tags longer than one byte ("Read underflow ... ApiVersion v3 at 274/279"). These
tests run kcat exactly as the README says: through `scripts/kcat`, which runs the installed kcat
binary with the newer librdkafka that ships inside the confluent-kafka wheel (LD_LIBRARY_PATH).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.stream.conftest import Replayed

pytestmark = pytest.mark.skipif(
    shutil.which("kcat") is None,
    reason="kcat not installed (Debian package `kcat`; .ci/install-kcat installs it in CI)",
)


KCAT = Path(__file__).resolve().parents[2] / "scripts" / "kcat"  # the README's recipe


@pytest.fixture(scope="module")
def kcat_env(taobao_replayed: Replayed) -> Iterator[dict[str, str]]:
    """The environment for `scripts/kcat`, the wrapper the README tells users to run."""
    env = {**os.environ, "PYTHON": sys.executable}
    probe = [str(KCAT), "-b", taobao_replayed.bootstrap, "-L", "-m", "3", "-J"]
    done = subprocess.run(probe, capture_output=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-500:]
    yield env


def test_kcat_lists_the_topic_and_its_partitions(
    taobao_replayed: Replayed, kcat_env: dict[str, str]
) -> None:
    result = subprocess.run(
        [str(KCAT), "-b", taobao_replayed.bootstrap, "-L", "-t", taobao_replayed.topic, "-J"],
        capture_output=True,
        env=kcat_env,
        timeout=30,
        check=True,
    )

    [topic] = orjson.loads(result.stdout)["topics"]
    assert topic["topic"] == taobao_replayed.topic
    assert len(topic["partitions"]) == 4


def test_kcat_reads_every_event_with_its_user_key(
    taobao_replayed: Replayed, kcat_env: dict[str, str]
) -> None:
    result = subprocess.run(
        [str(KCAT), "-b", taobao_replayed.bootstrap, "-C", "-t", taobao_replayed.topic,
         "-o", "beginning", "-e", "-q", "-f", "%k\t%s\n"],
        capture_output=True,
        env=kcat_env,
        timeout=120,
        check=True,
    )  # fmt: skip

    lines = result.stdout.splitlines()
    assert len(lines) == 110_300
    for line in lines:
        key, value = line.split(b"\t", 1)
        assert orjson.loads(value)["user_id"].encode() == key
