"""kcat (a third-party librdkafka client) reads the replayed events from the embedded broker.

kcat 1.7.1 on Debian bookworm links librdkafka 2.0.2, which cannot parse Tansu's ApiVersions v3
reply: Tansu writes every KIP-482 tagged field, including FinalizedFeaturesEpoch (8 bytes), and
2.0.2 mis-skips tags longer than one byte ("Read underflow ... ApiVersion v3 at 274/279"). When
the installed kcat fails that way, these tests run the same kcat binary against the newer
librdkafka that ships inside the confluent-kafka wheel (LD_LIBRARY_PATH), and say so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import confluent_kafka
import orjson
import pytest

from tests.stream.conftest import Replayed

pytestmark = pytest.mark.skipif(
    shutil.which("kcat") is None,
    reason="kcat not installed (Debian package `kcat`; .ci/install-kcat installs it in CI)",
)


def _wheel_librdkafka_dir(tmp: Path) -> Path | None:
    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    if not found:
        return None
    (tmp / "librdkafka.so.1").symlink_to(found[0])
    return tmp


def _lists_metadata(bootstrap: str, env: dict[str, str]) -> bool:
    probe = ["kcat", "-b", bootstrap, "-L", "-m", "3", "-J"]
    return subprocess.run(probe, capture_output=True, env=env, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def kcat_env(
    taobao_replayed: Replayed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Environment in which kcat talks to the broker: as installed, else with a newer librdkafka."""
    env = dict(os.environ)
    if _lists_metadata(taobao_replayed.bootstrap, env):
        yield env
        return
    lib_dir = _wheel_librdkafka_dir(tmp_path_factory.mktemp("librdkafka"))
    if lib_dir is None:
        pytest.skip("installed kcat cannot read Tansu's ApiVersions reply and no newer librdkafka")
    env["LD_LIBRARY_PATH"] = f"{lib_dir}:{env.get('LD_LIBRARY_PATH', '')}"
    warnings.warn(
        "installed kcat's librdkafka cannot parse Tansu's ApiVersions v3; "
        "running kcat with confluent-kafka's librdkafka",
        stacklevel=1,
    )
    assert _lists_metadata(taobao_replayed.bootstrap, env)
    yield env


def test_kcat_lists_the_topic_and_its_partitions(
    taobao_replayed: Replayed, kcat_env: dict[str, str]
) -> None:
    result = subprocess.run(
        ["kcat", "-b", taobao_replayed.bootstrap, "-L", "-t", taobao_replayed.topic, "-J"],
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
        ["kcat", "-b", taobao_replayed.bootstrap, "-C", "-t", taobao_replayed.topic,
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
