"""Helpers shared by the benchmark scripts: timing, machine info, JSON + Markdown output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import jax

    return dict(platform=platform.platform(), python=platform.python_version(), cpus=os.cpu_count(),
                jax=jax.__version__, backend=jax.default_backend(),
                xla_flags=os.environ.get("XLA_FLAGS", ""), date=time.strftime("%Y-%m-%d %H:%M"))


def median_time(fn, repeats: int = 5) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` over ``repeats`` calls (seconds) and all the times."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def write_results(name: str, data: dict, table: list[list[str]], header: list[str], notes: str = "") -> Path:
    """Write ``results/{name}.json`` and ``results/{name}.md`` (atomically) and return the md path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    from keycld import fileio

    js, md = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    fileio.write_json(js, data)
    lines = [f"# {name}", "", notes, "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    fileio.write_text(md, "\n".join(lines) + "\n")
    return md
