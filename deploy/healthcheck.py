#!/usr/bin/env python3
"""Container health probe: exit 0 when the worker's /health answers 200, else 1 (stdlib only).

Used by the image's HEALTHCHECK and the compose healthchecks; the port follows BSTREAM_METRICS_PORT.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main() -> int:
    """Probe http://localhost:$BSTREAM_METRICS_PORT/health once."""
    port = os.environ.get("BSTREAM_METRICS_PORT", "9464")
    url = f"http://localhost:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            body = response.read(512).decode("utf-8", "replace")
    except OSError as exc:  # connection refused, timeout, and HTTPError (503 = not ready)
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
