"""Time to quality: validation VPT of ``keycld train --preset cpu`` against minutes of wall clock.

    python benchmarks/time_to_quality.py --system pendulum --seeds 0 1 2 [--control yes] [--max_minutes 60]
        [--out_dir benchmarks/results/time_to_quality_pendulum] [--runs_dir DIR] [--cache_dir DIR]
        [--resume] [--poll_s 5] [--grace_s 30] [--extra TRAIN_FLAGS...]
    python benchmarks/time_to_quality.py --from_runs RUN_DIR... [--max_minutes 60] [--out_dir DIR]

For each seed, one ``python -m keycld.cli train --preset cpu`` subprocess trains into
``RUNS_DIR/SYSTEM-sSEED``, by default from an empty dataset cache (a fresh temporary directory per
seed, removed afterwards), so data generation, compilation and validation count in the clock.
The clock is the seconds since the subprocess was launched. Every ``--poll_s`` seconds the run's
epoch records (``keycld.rundir.read_metrics``) are read; each new one becomes a point of the
seed's curve at the time it was first seen (validation VPT mean and median, the constraint
residual and the reconstruction loss where present). After ``--max_minutes`` the subprocess gets
SIGINT, then SIGTERM and SIGKILL after ``--grace_s`` seconds each; a run that finishes earlier
ends normally. ``OUT_DIR/time_to_quality.json`` is rewritten (atomically) after every poll, so a
killed benchmark loses at most one poll; ``--resume`` continues its unfinished seeds with
``keycld train --resume`` and adds the wall time recorded before (records that appeared after
the last recorded poll get that poll's time).

``--from_runs`` re-reads finished run directories instead and uses each record's
``wall_time_s`` (training steps only: data generation, compilation outside the steps and
validation are excluded) as the clock.

Writes ``OUT_DIR/time_to_quality.json`` (machine, command, per-seed curves and summaries),
``OUT_DIR/time_to_quality.md`` (per seed: VPT at 5 / 15 / 30 / 45 / 60 min = the last epoch
record at or before that time, the best VPT within the budget and when it was first reached, the
time to first reach VPT >= 20) and ``OUT_DIR/time_to_quality.png`` (VPT against minutes, one line
per seed, and the original implementation's curve where one is known).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))

from _common import RESULTS, machine  # noqa: E402

from keycld import fileio, rundir  # noqa: E402
from keycld.cliutil import StrictParser  # noqa: E402
from keycld.config import TrainConfig  # noqa: E402
from keycld.data import CONTROLS  # noqa: E402
from keycld.tasks import ENVIRONMENTS  # noqa: E402

NAME = "time_to_quality"
VPT = "val/vpt_mean"  # the quality measure: mean validation VPT in frames
# the fields of an epoch record a curve point keeps (those a record lacks are left out)
RECORD_FIELDS = ("epoch", "stage", VPT, "val/vpt_median", "val/constraint_residual_mean", "train/reconstruction")
TABLE_MINUTES = (5, 15, 30, 45, 60)
VPT_THRESHOLD = 20.0  # frames
# The original implementation's cpu curve measured on a 2-core machine of this type, h = 16:
# mean validation VPT (frames) of the pendulum at 5 / 15 / 30 / 45 minutes of wall clock.
REFERENCE_CURVE = {"pendulum": {"minutes": (5, 15, 30, 45), "vpt_mean": (3.4, 7.4, 7.4, 8.4)}}
# train flags the benchmark sets itself; --extra may not give them
BENCHMARK_FLAGS = ("--preset", "--environment", "--system", "--data", "--control", "--seed", "--out", "--resume",
                   "--init_from", "--cache_dir", "--quiet")
LIVE_CLOCK = ("seconds since `keycld train` was launched, from an empty dataset cache unless --cache_dir is given "
              "(data generation, compilation and validation count)")
RUNS_CLOCK = ("the records' `wall_time_s`: seconds of training steps only; this clock excludes data generation "
              "and validation")


# ---- curves and their summary -------------------------------------------------------------------
def curve_point(record: dict, time_s: float) -> dict:
    """The curve point of one epoch record seen at ``time_s`` seconds: its ``RECORD_FIELDS`` and
    its training-only clock ``train_wall_time_s``."""
    point = {"time_s": float(time_s), "train_wall_time_s": record.get("wall_time_s")}
    point.update({k: record[k] for k in RECORD_FIELDS if k in record})
    return point


def value_at(curve: list[dict], time_s: float, key: str = VPT) -> float | None:
    """``key`` of the last point at or before ``time_s`` (None before the first point or when
    that point lacks ``key``); ``curve`` is sorted by time."""
    before = [p for p in curve if p["time_s"] <= time_s]
    return before[-1].get(key) if before else None


def summarize(curve: list[dict], budget_s: float) -> dict:
    """VPT at each of ``TABLE_MINUTES`` within the budget (None beyond it or before the first
    epoch), the best VPT within the budget and the minute it was first reached, and the minute VPT
    first reached ``VPT_THRESHOLD`` (None when never)."""
    inside = [p for p in curve if p["time_s"] <= budget_s]
    scored = [p for p in inside if p.get(VPT) is not None]
    best = max(scored, key=lambda p: p[VPT], default=None)  # the first of equal maxima
    first = next((p for p in scored if p[VPT] >= VPT_THRESHOLD), None)
    return {"vpt_at_min": {str(m): value_at(inside, 60.0 * m) if 60.0 * m <= budget_s else None
                           for m in TABLE_MINUTES},
            "best_vpt": None if best is None else best[VPT],
            "best_at_min": None if best is None else best["time_s"] / 60,
            "first_reach_min": None if first is None else first["time_s"] / 60,
            "epochs": inside[-1].get("epoch") if inside else 0}


def summarize_seeds(runs: list[dict]) -> dict:
    """Across runs: the mean VPT at each minute (None unless every run has a value there) and
    how many runs reached ``VPT_THRESHOLD``."""
    means = {}
    for m in map(str, TABLE_MINUTES):
        values = [r["summary"]["vpt_at_min"][m] for r in runs]
        means[m] = sum(values) / len(values) if values and None not in values else None
    return {"mean_vpt_at_min": means, "runs": len(runs),
            "reached_threshold": sum(r["summary"]["first_reach_min"] is not None for r in runs)}


def add_points(curve: list[dict], seen: set, records: list[dict], time_s: float) -> list[dict]:
    """Add the records not in ``seen`` (keys: epoch, ``wall_time_s``) to ``curve`` at ``time_s``;
    a record of an epoch already in the curve (retrained after a resume) replaces its point. The
    new points."""
    new = []
    for record in records:
        key = (record.get("epoch"), record.get("wall_time_s"))
        if key in seen:
            continue
        seen.add(key)
        curve[:] = [p for p in curve if p.get("epoch") != record.get("epoch")]
        point = curve_point(record, time_s)
        curve.append(point)
        new.append(point)
    curve.sort(key=lambda p: p["time_s"])
    return new


# ---- outputs ------------------------------------------------------------------------------------
def _fmt(value: float | None, missing: str = "—") -> str:
    return missing if value is None else f"{value:.2f}"


def _minutes(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} min"


def render_table(doc: dict) -> str:
    """The markdown of ``time_to_quality.md``."""
    budget = doc["max_minutes"]
    cells = [m <= budget for m in TABLE_MINUTES]
    header = (["seed", "run"] + [f"VPT @ {m} min" for m in TABLE_MINUTES]
              + ["best VPT (first reached)", f"first VPT ≥ {VPT_THRESHOLD:g}", "epochs", "status"])
    rows = []
    for r in doc["runs"]:
        s = r["summary"]
        at = [_fmt(s["vpt_at_min"][str(m)]) if ok else "n/a" for m, ok in zip(TABLE_MINUTES, cells)]
        best = "—" if s["best_vpt"] is None else f"{s['best_vpt']:.2f} ({s['best_at_min']:.1f} min)"
        rows.append([str(r["seed"]), f"`{r['run_dir']}`", *at, best, _minutes(s["first_reach_min"]),
                     str(s["epochs"]), r["status"]])
    mean = doc["summary"]["mean_vpt_at_min"]
    rows.append(["mean", "", *[_fmt(mean[str(m)]) if ok else "n/a" for m, ok in zip(TABLE_MINUTES, cells)],
                 "", f"{doc['summary']['reached_threshold']} of {doc['summary']['runs']} runs", "", ""])
    ref = doc["reference"]
    if ref is not None:
        known = dict(zip(ref["minutes"], ref["vpt_mean"]))
        rows.append(["original implementation", "", *[_fmt(known.get(m), "not measured") for m in TABLE_MINUTES],
                     "", "", "", ""])
    lines = [f"# Time to quality: {doc['system']}, control {doc['control']}, `--preset cpu`", "",
             f"`{doc['command']}` on {doc['machine']['date']}, {doc['machine']['cpus']} CPUs, jax "
             f"{doc['machine']['jax']} ({doc['machine']['backend']}).", "",
             f"Clock: {doc['clock']}. VPT: the validation VPT mean (frames) of the last epoch record at or before "
             f"each time; '—' = no epoch record by then; 'n/a' = beyond the {budget:g}-minute budget. Best VPT and "
             f"the first VPT ≥ {VPT_THRESHOLD:g} count records within the budget. 'mean' averages the runs "
             "where every run has a value."
             + (f" The original implementation's row: {ref['note']}." if ref is not None else ""), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot(doc: dict, path: Path) -> None:
    """VPT mean against minutes: one step line per run, the reference curve dashed."""
    from matplotlib.figure import Figure

    from keycld.viz import save_figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    seeds = [r["seed"] for r in doc["runs"]]
    for r in doc["runs"]:
        pts = [p for p in r["curve"] if p.get(VPT) is not None]
        label = f"seed {r['seed']}" + (f" ({Path(r['run_dir']).name})" if seeds.count(r["seed"]) > 1 else "")
        if pts:
            ax.plot([0.0] + [p["time_s"] / 60 for p in pts], [math.nan] + [p[VPT] for p in pts],
                    drawstyle="steps-post", marker="o", ms=3, label=label)
    ref = doc["reference"]
    if ref is not None:
        ax.plot(ref["minutes"], ref["vpt_mean"], "k--", marker="s", ms=4, label="original implementation")
    ax.axvline(doc["max_minutes"], color="0.6", lw=0.8)
    ax.set_xlim(0, doc["max_minutes"] * 1.02)
    ax.set_xlabel("wall clock (minutes)" if doc["mode"] == "live" else "training wall_time_s (minutes)")
    ax.set_ylabel("validation VPT mean (frames)")
    ax.set_title(f"{doc['system']}, control {doc['control']}, --preset cpu", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(path, fig)


def write_outputs(out_dir: Path, doc: dict, final: bool) -> None:
    """Refresh the summaries of ``doc`` and write its JSON (and, when ``final``, the table and PNG)."""
    budget_s = 60.0 * doc["max_minutes"]
    for r in doc["runs"]:
        r["summary"] = summarize(r["curve"], budget_s)
    doc["summary"] = summarize_seeds(doc["runs"])
    out_dir.mkdir(parents=True, exist_ok=True)
    fileio.write_json(out_dir / f"{NAME}.json", doc)
    if final:
        fileio.write_text(out_dir / f"{NAME}.md", render_table(doc))
        plot(doc, out_dir / f"{NAME}.png")


def new_document(argv: list[str], mode: str, system: str, control: str, max_minutes: float) -> dict:
    ref = REFERENCE_CURVE.get(system)
    if ref is not None:
        ref = {**ref, "note": f"its cpu curve measured on a 2-core machine of this type, h = 16, {system}, "
                              "mean validation VPT"}
    return {"name": NAME, "mode": mode, "machine": machine(),
            "command": shlex.join(["python", "benchmarks/time_to_quality.py", *argv]),
            "clock": LIVE_CLOCK if mode == "live" else RUNS_CLOCK, "system": system, "control": control,
            "max_minutes": max_minutes, "vpt_threshold": VPT_THRESHOLD, "table_minutes": list(TABLE_MINUTES),
            "reference": ref, "runs": []}


# ---- training subprocesses ----------------------------------------------------------------------
def _shown(path: Path | str) -> str:
    """``path`` as recorded in the results: relative to the repository when inside it, so that
    committed results do not carry this machine's absolute paths."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def train_args(system: str, control: str, seed: int, run_dir: Path, cache_dir: Path | str, extra: list[str],
               resume: bool) -> list[str]:
    """The ``keycld train`` arguments of one seed (after ``python -m keycld.cli``)."""
    common = ["--quiet", "--cache_dir", str(cache_dir), *extra]
    if resume:
        return ["train", "--resume", str(run_dir), *common]
    return ["train", "--preset", "cpu", "--environment", system, "--control", control, "--seed", str(seed),
            "--out", str(run_dir), *common]


def planned_config(args: list[str]) -> TrainConfig:
    """The TrainConfig ``keycld train ARGS`` would train (nothing is written); ValueError with
    keycld's own message when it rejects the arguments."""
    from keycld.cli import build_parser
    from keycld.train_cli import config_from_args

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = build_parser().parse_args(args)
            return config_from_args(ns, ns.parser)
    except SystemExit:
        message = err.getvalue().strip().splitlines()
        raise ValueError(message[-1].split(": error: ", 1)[-1] if message else "rejected") from None


def stop(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGINT to the subprocess's process group, then SIGTERM and SIGKILL after ``grace_s``
    seconds each while it still runs."""
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


@contextlib.contextmanager
def _sigint_not_ignored() -> Iterator[None]:
    """While it is open, SIGINT raises KeyboardInterrupt here instead of being ignored (as in a
    benchmark started in the background by a shell without job control). A subprocess started
    inside gets SIGINT's default action (exec keeps ignored signals, resets handled ones), so
    ``stop`` can interrupt it."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_seed(entry: dict, cmd: list[str], run_dir: Path, log_path: Path, budget_s: float, poll_s: float,
             grace_s: float, save: Callable[[], None]) -> None:
    """Run ``cmd`` and record ``run_dir``'s epoch records into ``entry['curve']`` until it ends
    or the clock (``entry['elapsed_s']`` at launch plus the seconds since) passes ``budget_s``."""
    offset = float(entry["elapsed_s"])
    curve = entry["curve"]
    seen = {(p.get("epoch"), p.get("train_wall_time_s")) for p in curve}
    add_points(curve, seen, rundir.read_metrics(run_dir), offset)  # written after the last recorded poll
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", "egl")
    tag = f"[{entry['system']} s{entry['seed']}]"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        start = time.monotonic()
        with _sigint_not_ignored():
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    cwd=REPO, start_new_session=True)
        entry.update(status="running", returncode=None)
        stopped = False
        try:
            while True:
                rc = proc.poll()
                entry["elapsed_s"] = offset + time.monotonic() - start
                for p in add_points(curve, seen, rundir.read_metrics(run_dir), entry["elapsed_s"]):
                    print(f"{tag} {p['time_s'] / 60:.1f} min: epoch {p.get('epoch')}, VPT mean "
                          f"{_fmt(p.get(VPT))}", flush=True)
                save()
                if rc is not None:
                    break
                if entry["elapsed_s"] > budget_s and not stopped:
                    print(f"{tag} {budget_s / 60:g}-minute budget reached; stopping the run", flush=True)
                    stop(proc, grace_s)
                    stopped = True
                    continue
                time.sleep(max(0.05, min(poll_s, budget_s - entry["elapsed_s"] + 0.05)))
        except KeyboardInterrupt:
            stop(proc, grace_s)
            entry.update(elapsed_s=offset + time.monotonic() - start, status="interrupted",
                         returncode=proc.returncode)
            add_points(curve, seen, rundir.read_metrics(run_dir), entry["elapsed_s"])
            save()
            raise
    entry["returncode"] = rc
    entry["status"] = ("stopped at budget" if stopped else "finished" if rc == 0
                       else f"failed (exit {rc}; log {log_path})")
    save()


# ---- command line -------------------------------------------------------------------------------
def positive_number(unit: str) -> Callable[[str], float]:
    """An argparse type: a finite number > 0 of ``unit``; the error names the given text."""
    import argparse

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"expected a number of {unit} > 0, got {text!r}")
        return value

    parse.__name__ = f"number of {unit}"
    return parse


def build_parser() -> StrictParser:
    p = StrictParser(prog="benchmarks/time_to_quality.py", description=__doc__.splitlines()[0])
    p.add_argument("--system", choices=ENVIRONMENTS, default=None, help="required unless --from_runs")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds, one run each")
    p.add_argument("--control", choices=CONTROLS, default="yes")
    p.add_argument("--max_minutes", type=positive_number("minutes"), default=60.0, help="wall-clock budget per seed")
    p.add_argument("--out_dir", default=None, help="default benchmarks/results/time_to_quality_SYSTEM")
    p.add_argument("--runs_dir", default=str(REPO / "runs" / NAME), help="run directories RUNS_DIR/SYSTEM-sSEED")
    p.add_argument("--cache_dir", default=None, help="a dataset cache shared by the seeds (default: a fresh "
                                                     "temporary one per seed, so data generation is timed)")
    p.add_argument("--resume", action="store_true", help="continue the unfinished seeds of OUT_DIR's JSON")
    p.add_argument("--poll_s", type=positive_number("seconds"), default=5.0,
                   help="seconds between reads of the records")
    p.add_argument("--grace_s", type=positive_number("seconds"), default=30.0,
                   help="seconds a stopped run gets after SIGINT (and after SIGTERM)")
    p.add_argument("--from_runs", nargs="+", default=None, metavar="RUN_DIR",
                   help="only re-read these run directories (clock: their records' wall_time_s)")
    p.add_argument("--extra", nargs="...", default=[], help="further flags for keycld train (last option)")
    return p


def _check_dir(p: StrictParser, path: Path, what: str) -> None:
    try:
        rundir.check_writable_dir(path, what)
    except ValueError as err:
        p.error(str(err))


def from_runs(p: StrictParser, args, argv: list[str], out_dir: Path | None) -> int:
    """Write the outputs from finished run directories (clock: their records' ``wall_time_s``)."""
    given = [f for f, v in (("--seeds", args.seeds), ("--resume", args.resume), ("--cache_dir", args.cache_dir),
                            ("--extra", args.extra)) if v]
    if given:
        p.error(f"{', '.join(given)} cannot be combined with --from_runs (it only re-reads finished runs)")
    runs, configs = [], []
    for path in map(Path, args.from_runs):
        try:
            cfg = rundir.load_config(path)
        except (FileNotFoundError, ValueError) as err:
            p.error(f"--from_runs {path}: {err}")
        records = rundir.read_metrics(path)
        if not records:
            p.error(f"--from_runs {path} holds no epoch records")
        if any(not isinstance(r.get("wall_time_s"), (int, float)) for r in records):
            p.error(f"--from_runs {path}: an epoch record has no wall_time_s")
        configs.append((path, cfg))
        runs.append({"seed": cfg.seed, "system": cfg.environment, "run_dir": _shown(path), "status": "re-read",
                     "curve": sorted((curve_point(r, r["wall_time_s"]) for r in records),
                                     key=lambda q: q["time_s"])})
    systems = {(cfg.environment, cfg.control) for _, cfg in configs}
    if len(systems) > 1:
        p.error("--from_runs mixes systems or controls: "
                + ", ".join(f"{path} ({cfg.environment}, control {cfg.control})" for path, cfg in configs))
    (system, control), = systems
    if args.system is not None and args.system != system:
        p.error(f"--system {args.system} disagrees with the runs, which train {system}")
    out_dir = out_dir or RESULTS / f"{NAME}_{system}"
    _check_dir(p, out_dir, "--out_dir")
    earlier = out_dir / f"{NAME}.json"
    if earlier.is_file():
        try:
            live = rundir.read_json(earlier).get("mode") != "from_runs"
        except (ValueError, AttributeError):
            live = True
        if live:
            p.error(f"{earlier} holds a live benchmark's curves (or is not a --from_runs result), which --from_runs "
                    "would replace; choose another --out_dir")
    doc = new_document(argv, "from_runs", system, control or "", args.max_minutes)
    doc["runs"] = runs
    write_outputs(out_dir, doc, final=True)
    print(f"wrote {out_dir / NAME}.json, .md and .png", file=sys.stderr)
    return 0


def read_stored(p: StrictParser, doc_path: Path, args) -> dict:
    """The document an earlier call wrote at ``doc_path`` ({} when there is none); exits with
    status 2 unless ``--resume`` is given and it records a live benchmark of the same system."""
    if not doc_path.is_file():
        return {}
    if not args.resume:
        p.error(f"{doc_path} already exists; pass --resume to continue its seeds, or choose another --out_dir")
    try:
        stored = rundir.read_json(doc_path)
    except ValueError as err:
        p.error(f"{doc_path} is not valid JSON: {err}")
    runs = stored.get("runs") if isinstance(stored, dict) else None
    if not isinstance(runs, list) or not all(
            isinstance(r, dict) and isinstance(r.get("seed"), int) and isinstance(r.get("elapsed_s"), (int, float))
            and isinstance(r.get("curve"), list) and isinstance(r.get("status"), str) for r in runs):
        p.error(f"{doc_path} is not a time_to_quality document (it needs a list 'runs' of seeds with seed, status, "
                "elapsed_s and curve)")
    if stored.get("mode") != "live" or (stored.get("system"), stored.get("control")) != (args.system, args.control):
        p.error(f"{doc_path} records {stored.get('system')} control {stored.get('control')} "
                f"({stored.get('mode')} mode), not a benchmark of {args.system} control {args.control}")
    return stored


def plan_seeds(p: StrictParser, args, runs_dir: Path, doc_path: Path, stored: dict,
               budget_s: float) -> list[tuple[dict, bool | None, Path]]:
    """(curve entry, whether ``keycld train --resume`` continues its run directory or None when
    the earlier call finished it, run directory) per seed; every check runs here, before any work."""
    previous = {r["seed"]: r for r in stored.get("runs", [])}
    plans = []
    for seed in args.seeds:
        run_dir = runs_dir / f"{args.system}-s{seed}"
        fresh = train_args(args.system, args.control, seed, run_dir, args.cache_dir or "CACHE", args.extra, False)
        try:
            cfg = planned_config(fresh)
        except ValueError as err:
            p.error(f"seed {seed}: keycld train rejects the flags ({err})")
        entry = previous.get(seed)
        has_run = rundir.is_run(run_dir)
        if has_run and entry is None:
            p.error(f"{run_dir} already holds a run that {doc_path} does not record"
                    + ("" if args.resume else "; pass --resume to continue it") + ", or choose another --runs_dir")
        if entry is not None and (entry["status"] == "finished" or entry["elapsed_s"] >= budget_s):
            if entry["status"] != "finished":
                entry["status"] = "stopped at budget"
            plans.append((entry, None, run_dir))
            continue
        try:
            if has_run:
                saved = rundir.check_resumable(run_dir)
                diff = [d for d in rundir.config_differences(saved, cfg) if not d.startswith("num_epochs:")]
                if diff or cfg.num_epochs < saved.num_epochs:
                    raise ValueError(f"{run_dir} trains another configuration ({'; '.join(diff) or 'num_epochs'})")
            else:
                rundir.check_new_run(run_dir, cfg)
        except (FileExistsError, FileNotFoundError, ValueError) as err:
            p.error(f"seed {seed}: {err}")
        entry = entry or {"seed": seed, "system": args.system, "run_dir": _shown(run_dir), "elapsed_s": 0.0,
                          "curve": []}
        plans.append((entry, has_run, run_dir))
    return plans


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = build_parser()
    args = p.parse_args(argv)
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir is not None:
        _check_dir(p, out_dir, "--out_dir")
    if args.from_runs:
        return from_runs(p, args, argv, out_dir)
    if args.system is None:
        p.error("--system is required (one of " + ", ".join(ENVIRONMENTS) + ") unless --from_runs is given")
    if not args.seeds:
        p.error("--seeds is required: one or more training seeds, e.g. --seeds 0 1 2")
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds repeats a seed: {' '.join(map(str, args.seeds))}")
    bad = [a.split("=")[0] for a in args.extra if a.split("=")[0] in BENCHMARK_FLAGS]
    if bad:
        p.error(f"--extra may not give {', '.join(bad)}: the benchmark sets {', '.join(BENCHMARK_FLAGS)} itself")
    out_dir = (out_dir or RESULTS / f"{NAME}_{args.system}").resolve()
    runs_dir = Path(args.runs_dir).resolve()
    _check_dir(p, runs_dir, "--runs_dir")
    if args.cache_dir is not None:
        _check_dir(p, Path(args.cache_dir), "--cache_dir")
    budget_s = 60.0 * args.max_minutes

    stored = read_stored(p, out_dir / f"{NAME}.json", args)
    plans = plan_seeds(p, args, runs_dir, out_dir / f"{NAME}.json", stored, budget_s)
    doc = new_document(argv, "live", args.system, args.control, args.max_minutes)
    # the seeds of this call, then those an earlier call recorded that this one does not run
    doc["runs"] = [entry for entry, _, _ in plans] + [r for r in stored.get("runs", []) if r["seed"] not in args.seeds]
    doc["extra"] = args.extra
    if stored:
        doc["earlier_commands"] = stored.get("earlier_commands", []) + [stored.get("command")]
    save = lambda: write_outputs(out_dir, doc, final=False)  # noqa: E731
    save()
    for entry, has_run, run_dir in plans:
        if has_run is None:
            print(f"[{args.system} s{entry['seed']}] {entry['status']} in an earlier call; kept", flush=True)
            continue
        cache = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix=f"keycld-{NAME}-"))
        entry["cache"] = str(cache) if args.cache_dir else "fresh temporary"
        cmd = [sys.executable, "-m", "keycld.cli",
               *train_args(args.system, args.control, entry["seed"], run_dir, cache, args.extra, has_run)]
        entry.setdefault("commands", []).append(shlex.join(["python", *cmd[1:]]))
        try:
            run_seed(entry, cmd, run_dir, runs_dir / f"{run_dir.name}.log", budget_s, args.poll_s, args.grace_s,
                     save)
        except KeyboardInterrupt:
            again = argv if args.resume else ["--resume", *argv]
            print(f"\ninterrupted; continue with: python benchmarks/time_to_quality.py {shlex.join(again)}",
                  file=sys.stderr)
            return 130
        finally:
            if not args.cache_dir:
                shutil.rmtree(cache, ignore_errors=True)
        write_outputs(out_dir, doc, final=True)
    write_outputs(out_dir, doc, final=True)
    print(render_table(doc))
    print(f"wrote {out_dir / NAME}.json, .md and .png", file=sys.stderr)
    return 0 if all(r["status"] in ("finished", "stopped at budget") for r in doc["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
