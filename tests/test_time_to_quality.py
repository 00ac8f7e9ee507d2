"""benchmarks/time_to_quality.py: curve extraction and summary, the --from_runs outputs, the
poll-and-stop loop on a stand-in subprocess (no training), and bad input."""
from __future__ import annotations

import json
import runpy
import signal
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from keycld import rundir
from keycld.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ttq():
    """The benchmark script's functions (it is a script, not a module of a package)."""
    return SimpleNamespace(**runpy.run_path(str(ROOT / "benchmarks" / "time_to_quality.py")))


def _record(epoch: int, minutes: float, vpt: float | None, **more) -> dict:
    record = {"epoch": epoch, "step": 10 * epoch, "wall_time_s": 60.0 * minutes, "train/reconstruction": 0.1 / epoch,
              **more}
    if vpt is not None:
        record.update({"val/vpt_mean": vpt, "val/vpt_median": vpt - 1})
    return record


def _fake_run(path: Path, seed: int, records: list[dict]) -> Path:
    """A run directory holding a config and the given epoch records (no weights)."""
    path.mkdir(parents=True)
    TrainConfig(environment="pendulum", seed=seed, num_hidden_dim=16).save(path / rundir.CONFIG)
    for r in records:
        rundir.append_metrics(path, r)
    return path


CURVE = [_record(1, 4, 3.0, stage="train"), _record(2, 15, 21.0, **{"val/constraint_residual_mean": 0.01}),
         _record(3, 20, 25.0), _record(4, 40, 25.0), _record(5, 70, 40.0)]


def _curve(ttq, run: Path) -> list[dict]:
    return [ttq.curve_point(r, r["wall_time_s"]) for r in rundir.read_metrics(run)]


def test_curve_points_keep_the_record_fields(ttq, tmp_path):
    curve = _curve(ttq, _fake_run(tmp_path / "run", 0, CURVE))
    assert [p["epoch"] for p in curve] == [1, 2, 3, 4, 5]
    assert curve[0]["stage"] == "train" and "stage" not in curve[1]
    assert curve[1]["val/constraint_residual_mean"] == 0.01 and "val/constraint_residual_mean" not in curve[0]
    assert curve[2]["val/vpt_median"] == 24.0 and curve[3]["train/reconstruction"] == pytest.approx(0.025)
    assert curve[2]["time_s"] == curve[2]["train_wall_time_s"] == 1200.0
    assert "step" not in curve[0]


def test_value_at_is_the_last_record_at_or_before(ttq, tmp_path):
    curve = _curve(ttq, _fake_run(tmp_path / "run", 0, CURVE))
    assert ttq.value_at(curve, 239.9) is None
    assert ttq.value_at(curve, 240.0) == 3.0
    assert ttq.value_at(curve, 899.9) == 3.0
    assert ttq.value_at(curve, 900.0) == 21.0
    assert ttq.value_at(curve, 3000.0) == 25.0
    assert ttq.value_at(curve, 1e9) == 40.0


def test_summary_within_the_budget(ttq, tmp_path):
    curve = _curve(ttq, _fake_run(tmp_path / "run", 0, CURVE))
    s = ttq.summarize(curve, 3600.0)
    assert s["vpt_at_min"] == {"5": 3.0, "15": 21.0, "30": 25.0, "45": 25.0, "60": 25.0}
    assert s["best_vpt"] == 25.0 and s["best_at_min"] == pytest.approx(20.0)  # first of the equal maxima
    assert s["first_reach_min"] == pytest.approx(15.0)
    assert s["epochs"] == 4  # epoch 5 came after the budget
    short = ttq.summarize(curve, 1800.0)
    assert short["vpt_at_min"] == {"5": 3.0, "15": 21.0, "30": 25.0, "45": None, "60": None}
    assert ttq.summarize(curve, 1000.0)["best_vpt"] == 21.0


def test_summary_when_never_reached(ttq, tmp_path):
    low = [_record(1, 10, 5.0), _record(2, 20, None), _record(3, 30, 19.9)]
    curve = _curve(ttq, _fake_run(tmp_path / "run", 0, low))
    s = ttq.summarize(curve, 3600.0)
    assert s["first_reach_min"] is None
    assert s["vpt_at_min"] == {"5": None, "15": 5.0, "30": 19.9, "45": 19.9, "60": 19.9}
    assert ttq.value_at(curve, 1500.0) is None  # the epoch-2 record has no validation VPT
    assert s["best_vpt"] == 19.9 and s["best_at_min"] == pytest.approx(30.0)
    empty = ttq.summarize([], 3600.0)
    assert empty["best_vpt"] is None and empty["first_reach_min"] is None and empty["epochs"] == 0
    runs = [{"summary": s}, {"summary": ttq.summarize(_curve(ttq, tmp_path / "run"), 1200.0)}]
    across = ttq.summarize_seeds(runs)
    assert across["mean_vpt_at_min"]["15"] == 5.0 and across["mean_vpt_at_min"]["30"] is None
    assert across["reached_threshold"] == 0 and across["runs"] == 2


def test_new_records_and_retrained_epochs(ttq):
    curve, seen = [], set()
    assert len(ttq.add_points(curve, seen, [_record(1, 1, 2.0), _record(2, 2, 4.0)], 100.0)) == 2
    assert ttq.add_points(curve, seen, [_record(1, 1, 2.0), _record(2, 2, 4.0)], 130.0) == []
    # after a resume the epoch-2 record was dropped and epoch 2 retrained
    new = ttq.add_points(curve, seen, [_record(1, 1, 2.0), _record(2, 2.5, 6.0)], 160.0)
    assert [(p["epoch"], p["time_s"], p["val/vpt_mean"]) for p in curve] == [(1, 100.0, 2.0), (2, 160.0, 6.0)]
    assert new == [curve[1]]


def test_from_runs_writes_json_table_and_png(ttq, tmp_path):
    a = _fake_run(tmp_path / "a", 0, CURVE)
    b = _fake_run(tmp_path / "b", 1, [_record(1, 6, 8.0), _record(2, 50, 12.0)])
    out = tmp_path / "out"
    assert ttq.main(["--from_runs", str(a), str(b), "--out_dir", str(out)]) == 0
    doc = json.loads((out / "time_to_quality.json").read_text())
    assert doc["mode"] == "from_runs" and doc["system"] == "pendulum" and doc["control"] == "yes"
    assert "excludes data generation and validation" in doc["clock"]
    assert [r["seed"] for r in doc["runs"]] == [0, 1]
    assert [p["epoch"] for p in doc["runs"][0]["curve"]] == [1, 2, 3, 4, 5]
    assert doc["runs"][1]["summary"]["vpt_at_min"] == {"5": None, "15": 8.0, "30": 8.0, "45": 8.0, "60": 12.0}
    assert doc["summary"]["mean_vpt_at_min"]["15"] == pytest.approx(14.5)
    assert doc["summary"]["reached_threshold"] == 1
    assert doc["reference"]["vpt_mean"] == list(ttq.REFERENCE_CURVE["pendulum"]["vpt_mean"])
    assert doc["machine"]["cpus"] >= 1
    table = (out / "time_to_quality.md").read_text()
    assert "excludes data generation and validation" in table
    row0 = next(line for line in table.splitlines() if line.startswith(f"| 0 | `{a}`"))
    assert "| 3.00 | 21.00 | 25.00 | 25.00 | 25.00 | 25.00 (20.0 min) | 15.0 min | 4 |" in row0
    row1 = next(line for line in table.splitlines() if line.startswith("| 1 |"))
    assert "| — | 8.00 | 8.00 | 8.00 | 12.00 | 12.00 (50.0 min) | never | 2 |" in row1
    assert "| original implementation |  | 3.40 | 7.40 | 7.40 | 8.40 | not measured |" in table
    png = (out / "time_to_quality.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_from_runs_keeps_a_live_benchmarks_results(ttq, tmp_path, capsys):
    a = _fake_run(tmp_path / "a", 0, CURVE)
    out = tmp_path / "out"
    assert ttq.main(["--from_runs", str(a), "--out_dir", str(out)]) == 0
    assert ttq.main(["--from_runs", str(a), "--out_dir", str(out), "--max_minutes", "30"]) == 0  # its own: replaced
    live = json.dumps({"mode": "live", "runs": []})
    (out / "time_to_quality.json").write_text(live)
    with pytest.raises(SystemExit) as exc:
        ttq.main(["--from_runs", str(a), "--out_dir", str(out)])
    assert exc.value.code == 2 and "live benchmark" in capsys.readouterr().err
    assert (out / "time_to_quality.json").read_text() == live


def test_a_shorter_budget_marks_later_minutes(ttq, tmp_path):
    a = _fake_run(tmp_path / "a", 3, CURVE)
    out = tmp_path / "out"
    assert ttq.main(["--from_runs", str(a), "--out_dir", str(out), "--max_minutes", "20"]) == 0
    row = next(line for line in (out / "time_to_quality.md").read_text().splitlines() if line.startswith("| 3 |"))
    assert "| 3.00 | 21.00 | n/a | n/a | n/a | 25.00 (20.0 min) | 15.0 min | 3 |" in row


FAKE_TRAIN = textwrap.dedent("""
    import json, sys, time
    path, n, end = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    for epoch in range(1, n + 1):
        with open(path, "a") as f:
            f.write(json.dumps({"epoch": epoch, "wall_time_s": 0.1 * epoch, "val/vpt_mean": 5.0 * epoch}) + "\\n")
        time.sleep(0.2)
    if end == "hang":
        time.sleep(60)
""")


def _entry(tmp_path, elapsed=0.0):
    run = tmp_path / "run"
    run.mkdir()
    return {"seed": 7, "system": "pendulum", "run_dir": str(run), "elapsed_s": elapsed, "curve": []}, run


def test_the_poll_loop_stops_a_run_at_the_budget(ttq, tmp_path):
    entry, run = _entry(tmp_path)
    saves = []
    cmd = [sys.executable, "-c", FAKE_TRAIN, str(run / rundir.METRICS), "2", "hang"]
    ttq.run_seed(entry, cmd, run, tmp_path / "log.txt", budget_s=2.0, poll_s=0.1, grace_s=5.0,
                 save=lambda: saves.append(len(entry["curve"])))
    assert entry["status"] == "stopped at budget" and entry["returncode"] != 0
    assert [p["val/vpt_mean"] for p in entry["curve"]] == [5.0, 10.0]
    assert all(0 < p["time_s"] < 2.0 for p in entry["curve"])
    assert 2.0 < entry["elapsed_s"] < 8.0  # stopped by SIGINT, well before the stand-in's 60 s
    assert len(saves) >= 5 and saves[-1] == 2


def test_a_run_started_with_sigint_ignored_still_stops_on_sigint(ttq, tmp_path):
    entry, run = _entry(tmp_path)
    cmd = [sys.executable, "-c", FAKE_TRAIN, str(run / rundir.METRICS), "1", "hang"]
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under `nohup ... &` from a script
    try:
        ttq.run_seed(entry, cmd, run, tmp_path / "log.txt", budget_s=1.0, poll_s=0.1, grace_s=30.0,
                     save=lambda: None)
    finally:
        signal.signal(signal.SIGINT, before)
    assert entry["status"] == "stopped at budget"
    assert entry["elapsed_s"] < 10.0  # SIGINT ended it, not the SIGTERM 30 s later


def test_the_poll_loop_adds_the_earlier_wall_time(ttq, tmp_path):
    entry, run = _entry(tmp_path, elapsed=100.0)
    cmd = [sys.executable, "-c", FAKE_TRAIN, str(run / rundir.METRICS), "3", "exit"]
    ttq.run_seed(entry, cmd, run, tmp_path / "log.txt", budget_s=130.0, poll_s=0.1, grace_s=5.0, save=lambda: None)
    assert entry["status"] == "finished" and entry["returncode"] == 0
    assert [p["epoch"] for p in entry["curve"]] == [1, 2, 3]
    assert all(100.0 < p["time_s"] < 110.0 for p in entry["curve"])
    assert 100.5 < entry["elapsed_s"] < 110.0


@pytest.mark.parametrize("argv, named", [
    (["--system", "pendel", "--seeds", "0"], "'pendel'"),
    (["--system", "pendulum", "--seeds", "0", "--max_minutes", "0"], "'0'"),
    (["--system", "pendulum", "--seeds", "0", "--max_minutes", "-5"], "'-5'"),
    (["--system", "pendulum", "--seeds"], "--seeds"),
    (["--system", "pendulum"], "--seeds"),
    (["--system", "pendulum", "--seeds", "0", "--extra", "--num_epochs", "0"], "got 0"),
    (["--system", "pendulum", "--seeds", "0", "--extra", "--seed", "3"], "--seed"),
])
def test_bad_input_exits_with_status_2(ttq, tmp_path, capsys, argv, named):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        # the paths first: --extra takes every argument after it
        ttq.main(["--out_dir", str(out), "--runs_dir", str(tmp_path / "runs"), *argv])
    assert exc.value.code == 2
    assert named in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_out_dir_that_is_a_file(ttq, tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("kept")
    with pytest.raises(SystemExit) as exc:
        ttq.main(["--system", "pendulum", "--seeds", "0", "--out_dir", str(target)])
    assert exc.value.code == 2 and str(target) in capsys.readouterr().err
    assert target.read_text() == "kept"


def test_existing_work_is_not_overwritten(ttq, tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "out"
    run = _fake_run(runs / "pendulum-s0", 0, [])
    (run / rundir.CHECKPOINT).write_bytes(b"weights")
    argv = ["--system", "pendulum", "--seeds", "0", "--out_dir", str(out), "--runs_dir", str(runs)]
    with pytest.raises(SystemExit) as exc:
        ttq.main(argv)
    assert exc.value.code == 2 and "--resume" in capsys.readouterr().err and not out.exists()
    out.mkdir()
    (out / "time_to_quality.json").write_text("{}")
    with pytest.raises(SystemExit) as exc:
        ttq.main(argv)
    assert exc.value.code == 2 and "already exists" in capsys.readouterr().err
    assert (out / "time_to_quality.json").read_text() == "{}"


def test_from_runs_input_is_checked(ttq, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exc:
        ttq.main(["--from_runs", str(empty), "--out_dir", str(tmp_path / "out")])
    assert exc.value.code == 2 and str(empty) in capsys.readouterr().err
    a = _fake_run(tmp_path / "a", 0, CURVE)
    with pytest.raises(SystemExit) as exc:
        ttq.main(["--from_runs", str(a), "--seeds", "1", "--out_dir", str(tmp_path / "out")])
    assert exc.value.code == 2 and "--seeds" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_resume_plans(ttq, tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "out"
    argv = ["--system", "pendulum", "--seeds", "0", "1", "2", "--runs_dir", str(runs), "--out_dir", str(out),
            "--resume", "--extra", "--num_epochs", "12"]
    p = ttq.build_parser()
    args = p.parse_args(argv)
    run0 = runs / "pendulum-s0"
    run0.mkdir(parents=True)
    ttq.planned_config(ttq.train_args("pendulum", "yes", 0, run0, "C", ["--num_epochs", "12"], False)).save(
        run0 / rundir.CONFIG)
    (run0 / rundir.CHECKPOINT).write_bytes(b"weights")
    stored = {"runs": [{"seed": 0, "elapsed_s": 100.0, "status": "running", "curve": []},
                       {"seed": 1, "elapsed_s": 3601.0, "status": "stopped at budget", "curve": []}]}
    plans = ttq.plan_seeds(p, args, runs, out / "time_to_quality.json", stored, 3600.0)
    assert [(e["seed"], e["elapsed_s"], resume, d.name) for e, resume, d in plans] == [
        (0, 100.0, True, "pendulum-s0"), (1, 3601.0, None, "pendulum-s1"), (2, 0.0, False, "pendulum-s2")]
    longer = ttq.plan_seeds(p, args, runs, out / "time_to_quality.json", stored, 7200.0)
    assert [resume for _, resume, _ in longer] == [True, False, False]  # a longer budget continues seed 1

    other = p.parse_args([a if a != "12" else "10" for a in argv])  # the run's config says 12 epochs
    with pytest.raises(SystemExit) as exc:
        ttq.plan_seeds(p, other, runs, out / "time_to_quality.json", stored, 3600.0)
    assert exc.value.code == 2 and "pendulum-s0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        ttq.plan_seeds(p, args, runs, out / "time_to_quality.json", {"runs": stored["runs"][1:]}, 3600.0)
    assert exc.value.code == 2 and "does not record" in capsys.readouterr().err


def test_run_paths_are_recorded_relative_to_the_repository(ttq, tmp_path):
    assert ttq._shown(ROOT / "runs" / "ttq" / "pendulum-s0") == "runs/ttq/pendulum-s0"
    assert ttq._shown(tmp_path / "a") == str((tmp_path / "a").resolve())  # outside: kept whole
