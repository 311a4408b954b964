"""`bstream retrain --on-drift`: wait until a worker's PSI alarm fires for the champion it serves.

Reads the workers' Prometheus text (`/metrics`): the champion is the `bstream_model_info`
sample with role="champion" at 1, its alarm the `bstream_drift_level` samples of that version at 2
(PSI over `BSTREAM_PSI_ALARM`, the worker's threshold). Gauges of a model swapped out keep their
last value, so only the served champion's count; after a promotion the new champion's own
reference is the baseline and the alarm clears.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("bstream.retrain")
ALARM = 2.0


@dataclass(frozen=True)
class Alarm:
    """Which worker alarmed, for which champion, on which features."""

    url: str
    model_version: str
    features: tuple[str, ...]


def champion_alarm(text: str) -> tuple[str | None, tuple[str, ...]]:
    """The served champion's version and its features at the alarm level (Prometheus text)."""
    from prometheus_client.parser import text_string_to_metric_families

    champion: str | None = None
    alarmed: dict[str, list[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "bstream_model_info" and labels.get("role") == "champion":
                if sample.value == 1:
                    champion = labels.get("model_version")
            elif sample.name == "bstream_drift_level" and sample.value >= ALARM:
                alarmed.setdefault(labels.get("model_version", ""), []).append(
                    labels.get("feature", "")
                )
    if champion is None:
        return None, ()
    return champion, tuple(sorted(alarmed.get(champion, [])))


def fetch_text(url: str, timeout: float = 10.0) -> str:
    """GET a metrics page."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - operator's URL
        return str(response.read().decode("utf-8"))


def wait_for_alarm(
    urls: Sequence[str],
    poll_s: float,
    wait_s: float | None,
    fetch: Callable[[str], str] = fetch_text,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Alarm | None:
    """Poll the URLs until one shows the alarm (None: `wait_s` passed first)."""
    started = clock()
    failing: set[str] = set()
    while True:
        for url in urls:
            try:
                version, features = champion_alarm(fetch(url))
            except (OSError, ValueError) as exc:
                if url not in failing:  # once per outage, not every poll
                    log.warning("cannot read %s: %s", url, exc)
                failing.add(url)
                continue
            failing.discard(url)
            if version is not None and features:
                return Alarm(url, version, features)
        if wait_s is not None and clock() - started >= wait_s:
            return None
        sleep(poll_s)
