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
    js, md = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    tmp = js.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, js)
    lines = [f"# {name}", "", notes, "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, md)
    return md
