"""`bstream bench`: model ceiling, optimized vs naive pipeline, latency at fixed load, memory.

Modules: `data` (bench events), `ceiling` (raw runtime throughput), `pipeline` (one worker phase on
the embedded broker, measured from the outside), `memory` (window store size), `report` (JSON,
Markdown, CDF plot), `runner` (the phases in order).
"""
