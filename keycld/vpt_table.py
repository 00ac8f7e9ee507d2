"""The VPT table of the model zoo: one cell per (model, dataset) from trained run directories.

A run directory holds ``config.json`` (a :class:`keycld.config.TrainConfig`) and ``vpt.json``
(written by ``keycld train`` / ``keycld evaluate``); optionally ``metrics.jsonl`` and
``vpt_heldout.json``. :func:`collect_runs` finds such directories under a few roots and keeps,
per (model, environment, control), the most-trained run; :func:`render_table` turns them into
markdown. A cell that no run directory measured says "not trained"; nothing is ever filled in
from elsewhere. The paper column shows ``PAPER_KEYCLD``'s value for a dataset and
``PAPER_MISSING`` ("n/a (not found)") where it has none; ``PAPER_KEYCLD`` is empty, so every row
says "n/a (not found)".
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from keycld import rundir
from keycld.config import DATASETS, REPRO_MODELS
from keycld.rundir import prior_budget, read_json as _read_json, sum_or_none

MODEL_LABELS = {"keycld": "KeyCLD", "no_constraint": "no constraint", "node2": "NODE2", "fc": "FC"}
PAPER_KEYCLD: dict[tuple[str, str], str] = {}  # (env, control) -> the paper's VPT; empty
PAPER_MISSING = "n/a (not found)"
NOT_TRAINED = "not trained"
MAX_DEPTH = 2


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What the table needs from one run directory (VPT in frames, wall time in seconds)."""

    model: str
    environment: str
    control: str
    mean: float
    std: float
    median: float
    heldout_mean: float | None
    heldout_std: float | None
    epochs: int  # epochs trained (last metrics line, else vpt.json, else config)
    planned_epochs: int  # config num_epochs
    steps: int | None  # optimiser steps trained, None when unknown
    hidden_dim: int
    preset: str | None
    wall_time_s: float | None
    path: Path
    prior_epochs: int = 0  # epochs of the run(s) this one was started from (--init_from)
    device: str | None = None  # hardware of the last epoch (metrics.jsonl "device"), None if not recorded

    @property
    def budget(self) -> tuple:
        """Sort key for "most training": steps (epochs × steps per epoch), then epochs."""
        return (self.steps if self.steps is not None else -1, self.epochs)


def summarize_run(run_dir: Path, init_mode: str = "random") -> RunSummary | None:
    """The summary of one run directory, or None if it is not a finished run of ``init_mode``.

    Raises ValueError / OSError for unreadable files (callers report and skip those).
    """
    run_dir = Path(run_dir)
    cfg_path, vpt_path = run_dir / rundir.CONFIG, run_dir / rundir.VPT
    if not (cfg_path.is_file() and vpt_path.is_file()):
        return None
    cfg = _read_json(cfg_path)
    if not isinstance(cfg, dict) or not {"model", "environment", "control"} <= set(cfg):
        raise ValueError(f"{cfg_path} names no model / environment / control")
    if cfg.get("init_mode", "random") != init_mode:
        return None
    vpt = _read_json(vpt_path)
    held_path = run_dir / rundir.vpt_file("heldout")
    held = _read_json(held_path) if held_path.is_file() else None
    last = rundir.last_metrics(run_dir) or {}
    planned = int(cfg.get("num_epochs", 40))
    epochs = last.get("epoch", vpt.get("epochs", planned))
    steps = last.get("step", vpt.get("steps"))
    wall = last.get("wall_time_s", vpt.get("train_wall_time_s"))
    prior = prior_budget(cfg.get("init_from"), run_dir)
    if prior is not None:  # a fine-tuned run: its budget includes its source's
        steps, wall = sum_or_none(steps, prior["steps"]), sum_or_none(wall, prior["wall_time_s"])
    return RunSummary(
        model=cfg["model"], environment=cfg["environment"], control=cfg["control"],
        mean=float(vpt["mean"]), std=float(vpt["std"]), median=float(vpt["median"]),
        heldout_mean=float(held["mean"]) if held else None, heldout_std=float(held["std"]) if held else None,
        epochs=int(epochs), planned_epochs=planned, steps=None if steps is None else int(steps),
        hidden_dim=int(cfg.get("num_hidden_dim", 32)), preset=cfg.get("preset"),
        wall_time_s=None if wall is None else float(wall), path=run_dir,
        prior_epochs=0 if prior is None else prior["epochs"], device=last.get("device"))


def _candidate_dirs(root: Path):
    """``root`` and its subdirectories down to MAX_DEPTH levels, in sorted order."""
    level = [root]
    for depth in range(MAX_DEPTH + 1):
        nxt = []
        for d in level:
            yield d
            if depth < MAX_DEPTH:
                try:
                    nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
                except OSError:
                    pass
        level = nxt


def collect_runs(roots: list[Path], init_mode: str = "random",
                 notes: list[str] | None = None) -> dict[tuple[str, str, str], RunSummary]:
    """Finished runs under ``roots`` (each scanned to depth 2), keyed by (model, environment, control).

    Model and dataset come from each run's config.json, not from its directory name. When several
    runs fill one cell, the one with the most training (steps, then epochs) wins; on a tie the
    first found (roots in the given order, directories sorted) is kept. Missing roots and
    unreadable runs are skipped; a line saying so is appended to ``notes`` if given.
    """
    out: dict[tuple[str, str, str], RunSummary] = {}
    seen: set[Path] = set()
    for root in map(Path, roots):
        if not root.is_dir():
            if notes is not None:
                notes.append(f"root {root} does not exist; skipped")
            continue
        for d in _candidate_dirs(root):
            real = d.resolve()
            if real in seen:
                continue
            seen.add(real)
            try:
                s = summarize_run(d, init_mode)
            except (OSError, ValueError, KeyError, TypeError) as err:
                if notes is not None:
                    notes.append(f"{d}: unreadable run ({err}); skipped")
                continue
            if s is None:
                continue
            key = (s.model, s.environment, s.control)
            if key not in out or s.budget > out[key].budget:
                out[key] = s
    return out


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def format_cell(s: RunSummary | None) -> str:
    if s is None:
        return NOT_TRAINED
    ep = f"{s.epochs} ep" if s.epochs == s.planned_epochs else f"{s.epochs}/{s.planned_epochs} ep"
    if s.prior_epochs:
        ep = f"{s.prior_epochs}+{ep}"
    wall = _hours(s.wall_time_s) if s.wall_time_s is not None else "time n/a"
    return f"{s.mean:.1f} ± {s.std:.1f} (h{s.hidden_dim}, {ep}, {wall})"


def _rel(path: Path, base: Path | None) -> str:
    if base is not None:
        try:
            return os.path.relpath(Path(path).resolve(), Path(base).resolve())
        except ValueError:
            pass
    return str(path)


def render_table(summaries: dict[tuple[str, str, str], RunSummary], base: Path | None = None) -> str:
    """Markdown: rows = the 8 datasets (random init), columns = the 4 models + the paper's KeyCLD,
    then the run directory of every filled cell (relative to ``base`` if given) and a legend."""
    header = ["dataset (random init)"] + [MODEL_LABELS[m] for m in REPRO_MODELS] + ["paper KeyCLD"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for env, control in DATASETS:
        cells = [format_cell(summaries.get((m, env, control))) for m in REPRO_MODELS]
        cells.append(PAPER_KEYCLD.get((env, control), PAPER_MISSING))
        lines.append(f"| {env} / {control} | " + " | ".join(cells) + " |")
    lines += ["", "Runs:", ""]
    used = [(env, control, m) for env, control in DATASETS for m in REPRO_MODELS if (m, env, control) in summaries]
    for env, control, m in used:
        s = summaries[(m, env, control)]
        extra = [f"median {s.median:g}"]
        if s.heldout_mean is not None:
            extra.append(f"held-out {s.heldout_mean:.1f} ± {s.heldout_std:.1f}")
        if s.steps is not None:
            extra.append(f"{s.steps} steps")
        if s.preset:
            extra.append(f"preset {s.preset}")
        if s.device:
            extra.append(f"on {s.device}")
        lines.append(f"- {env} / {control}, {MODEL_LABELS[m]}: `{_rel(s.path, base)}` ({', '.join(extra)})")
    if not used:
        lines.append("- none yet")
    others = sorted(k for k in summaries if (k[1], k[2]) not in DATASETS or k[0] not in REPRO_MODELS)
    for k in others:
        lines.append(f"- not in the table ({k[0]}, {k[1]} / {k[2]}): `{_rel(summaries[k].path, base)}`")
    lines += [
        "",
        "Legend: VPT (valid prediction time, frames) mean ± std over the 50 validation runs "
        "(`vpt.json`); in brackets the training budget: hidden width h, epochs trained "
        "(trained/planned when stopped early), and wall time of training (last `wall_time_s` in "
        "`metrics.jsonl`; it may include time the process was paused or shared the CPU, see the "
        "run's README). \"not trained\": no run directory with this model and dataset has a "
        "`vpt.json`. \"paper KeyCLD\": the value reported by Daems et al. 2024; "
        f"\"{PAPER_MISSING}\": no paper value is recorded for this cell.",
    ]
    return "\n".join(lines) + "\n"
