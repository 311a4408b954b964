"""RSS around hot swaps, done the way stream.modelswap does them (docs/DESIGN.md, Memory).

Loads bundle A, serves batches on an inference thread, then swaps A<->B N times: the next bundle is
loaded and warmed up on a loader thread, swapped in, the old runtime dropped, gc.collect() and
(with --trim) glibc malloc_trim(0). Prints RSS before, during (both loaded) and after each swap.

Usage: .venv/bin/python scripts/swap_memory.py BUNDLE_A BUNDLE_B [--swaps 8] [--no-trim]
Try MALLOC_MMAP_THRESHOLD_=131072 or MALLOC_ARENA_MAX=2 in the environment to compare.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    from model.runtime import Runtime
    from stream.simulate import simulate_events

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs=2, type=Path)
    parser.add_argument("--swaps", type=int, default=8)
    parser.add_argument("--no-trim", dest="trim", action="store_false")
    args = parser.parse_args()
    history: dict[str, list[dict[str, Any]]] = {}
    windows = []
    for event in simulate_events(40, seed=1):
        seq = history.setdefault(event["user_id"], [])
        seq.append(event)
        windows.append(seq[-20:])
    batches = [windows[i : i + 64] for i in range(0, 640, 64)]
    loader = ThreadPoolExecutor(1, thread_name_prefix="bstream-load")
    infer = ThreadPoolExecutor(1, thread_name_prefix="bstream-infer")
    libc = ctypes.CDLL("libc.so.6")

    def serve(model: Any) -> None:
        for batch in batches:
            infer.submit(model.predict, batch).result()

    model = Runtime.load(args.bundles[0], device="cpu")
    serve(model)
    gc.collect()
    libc.malloc_trim(0)
    print(f"before: {rss_mb():.0f} MB (trim after each swap: {args.trim})", flush=True)
    for i in range(args.swaps):
        new = loader.submit(Runtime.load, args.bundles[(i + 1) % 2], "cpu").result()
        during = rss_mb()
        old = weakref.ref(model)
        model = new
        serve(model)
        gc.collect()
        if args.trim:
            libc.malloc_trim(0)
        print(
            f"swap {i + 1}: both loaded {during:.0f} MB, after {rss_mb():.0f} MB "
            f"(old runtime collected: {old() is None})",
            flush=True,
        )


if __name__ == "__main__":
    main()
