"""Print the fault scenarios' result rows as one table at the end of the run."""

from __future__ import annotations

from typing import Any

from tests.faults.support import RESULTS

COLUMNS = (
    ("scenario", "scenario"),
    ("runs", "runs"),
    ("events", "events"),
    ("users_lost", "users lost"),
    ("duplicates", "duplicates"),
    ("duplicate_rate", "dup rate"),
    ("dlq", "DLQ"),
    ("peak_rss_mib", "peak RSS MiB"),
    ("time_to_recover_s", "recover s"),
    ("supervisor_restarts", "restarts"),
)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    rows = [[str(row.get(key, "")) for key, _ in COLUMNS] for row in RESULTS]
    header = [title for _, title in COLUMNS]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    terminalreporter.section("fault scenarios")
    for line in (header, *rows):
        terminalreporter.write_line(
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))
        )
