"""The model zoo's VPT table (keycld/vpt_table.py, benchmarks/vpt_table.py) from fake run directories."""
import importlib.util
import json
from pathlib import Path

import pytest

from keycld.config import TrainConfig
from keycld.evaluate_cli import DATASETS, REPRO_MODELS, vpt_table
from keycld.vpt_table import collect_runs, render_table

COLUMNS = ["KeyCLD", "no constraint", "NODE2", "FC", "paper KeyCLD"]


def fake_run(run_dir: Path, model="keycld", environment="pendulum", control="yes", mean=9.68, std=6.8365,
             median=7.0, epochs=10, steps_per_epoch=450, hidden=16, wall=5789.6, vpt=True, heldout=None,
             **cfg):
    run_dir.mkdir(parents=True)
    TrainConfig(model=model, environment=environment, control=control, num_epochs=epochs,
                num_hidden_dim=hidden, **cfg).save(run_dir / "config.json")
    with open(run_dir / "metrics.jsonl", "w") as f:
        for e in range(1, epochs + 1):
            f.write(json.dumps({"epoch": e, "step": e * steps_per_epoch, "train_time_s": wall / epochs,
                                "wall_time_s": wall * e / epochs}) + "\n")
    if vpt:
        (run_dir / "vpt.json").write_text(json.dumps({"mean": mean, "std": std, "median": median, "n": 50}))
    if heldout is not None:
        (run_dir / "vpt_heldout.json").write_text(json.dumps({"mean": heldout[0], "std": heldout[1],
                                                              "median": 0.0}))
    return run_dir


def cells(md: str) -> dict[str, dict[str, str]]:
    """{"env / control": {column: cell}} from the markdown table."""
    lines = [l for l in md.splitlines() if l.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[1:] == COLUMNS
    out = {}
    for line in lines[1:]:
        row = [c.strip() for c in line.strip("|").split("|")]
        out[row[0]] = dict(zip(header[1:], row[1:]))
    return out


def test_filled_cell_untrained_cells_and_paper_column(tmp_path):
    fake_run(tmp_path / "zoo" / "whatever-name", model="node2", environment="cartpole", control="underactuated",
             mean=12.34, std=5.67, epochs=5, steps_per_epoch=450, hidden=16, wall=3240.0, heldout=(8.82, 6.39))
    runs = collect_runs([tmp_path / "zoo"])
    assert set(runs) == {("node2", "cartpole", "underactuated")}
    s = runs[("node2", "cartpole", "underactuated")]
    assert (s.mean, s.std, s.median, s.epochs, s.steps, s.hidden_dim) == (12.34, 5.67, 7.0, 5, 2250, 16)
    assert s.heldout_mean == 8.82 and s.wall_time_s == pytest.approx(3240.0)
    md = render_table(runs, base=tmp_path)
    table = cells(md)
    assert list(table) == [f"{e} / {c}" for e, c in DATASETS]
    assert table["cartpole / underactuated"]["NODE2"] == "12.3 ± 5.7 (h16, 5 ep, 0.9 h)"
    for row, row_cells in table.items():
        assert row_cells["paper KeyCLD"] == "n/a (not found)"
        for col in COLUMNS[:4]:
            if (row, col) != ("cartpole / underactuated", "NODE2"):
                assert row_cells[col] == "not trained", (row, col)
    assert "`zoo/whatever-name`" in md and "held-out 8.8 ± 6.4" in md


def test_model_and_dataset_come_from_config_not_dir_name(tmp_path):
    fake_run(tmp_path / "fc-acrobot-random-no", model="no_constraint", environment="pendulum", control="no")
    table = cells(render_table(collect_runs([tmp_path])))
    assert table["pendulum / no"]["no constraint"].startswith("9.7 ± 6.8 (h16, 10 ep, 1.6 h)")
    assert table["acrobot / no"]["FC"] == "not trained"


@pytest.mark.parametrize("longer_first", [True, False])
def test_two_runs_for_one_cell_pick_the_longer_trained(tmp_path, longer_first):
    names = ("a", "b") if longer_first else ("b", "a")
    fake_run(tmp_path / names[0], mean=20.0, std=1.0, epochs=40, hidden=32, wall=7200.0)
    fake_run(tmp_path / names[1], mean=3.0, std=1.0, epochs=10, hidden=16, wall=3600.0)
    # same epochs but fewer steps per epoch loses too
    fake_run(tmp_path / "c", mean=4.0, std=1.0, epochs=40, steps_per_epoch=100, hidden=32, wall=100.0)
    runs = collect_runs([tmp_path])
    assert runs[("keycld", "pendulum", "yes")].path == tmp_path / names[0]
    md = render_table(runs, base=tmp_path)
    assert cells(md)["pendulum / yes"]["KeyCLD"] == "20.0 ± 1.0 (h32, 40 ep, 2.0 h)"
    assert f"`{names[0]}`" in md and f"`{names[1]}`" not in md


def test_run_without_vpt_is_ignored_and_depth_is_limited(tmp_path):
    fake_run(tmp_path / "unfinished", model="fc", vpt=False)
    fake_run(tmp_path / "x" / "y" / "too-deep", model="node2")
    fake_run(tmp_path / "x" / "deep-enough", model="keycld", environment="acrobot", control="yes")
    fake_run(tmp_path / "x" / "fixed", model="keycld", environment="acrobot", control="no",
             init_mode="rest")  # not the paper's (random init) table
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    (tmp_path / "broken" / "vpt.json").write_text("{}")
    notes = []
    runs = collect_runs([tmp_path, tmp_path / "missing"], notes=notes)
    assert set(runs) == {("keycld", "acrobot", "yes")}
    assert any("missing" in n and "does not exist" in n for n in notes)
    assert any("broken" in n for n in notes)
    assert not any("unfinished" in n for n in notes)  # no vpt.json: not a run, not an error
    table = cells(render_table(runs))
    assert table["pendulum / yes"]["FC"] == "not trained"
    assert table["pendulum / yes"]["NODE2"] == "not trained"
    assert table["acrobot / yes"]["KeyCLD"] != "not trained"


def test_stopped_early_and_no_metrics(tmp_path):
    run = fake_run(tmp_path / "r", epochs=10)
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 4, "step": 1800, "wall_time_s": 300.0}) + "\n")
    assert cells(render_table(collect_runs([tmp_path])))["pendulum / yes"]["KeyCLD"] == \
        "9.7 ± 6.8 (h16, 4/10 ep, 5.0 min)"
    (run / "metrics.jsonl").unlink()
    assert cells(render_table(collect_runs([tmp_path])))["pendulum / yes"]["KeyCLD"] == \
        "9.7 ± 6.8 (h16, 10 ep, time n/a)"


def test_benchmark_cli_writes_markdown(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "bench_vpt_table", Path(__file__).resolve().parent.parent / "benchmarks" / "vpt_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fake_run(tmp_path / "runs" / "one", model="fc", environment="cartpole", control="yes", mean=2.0, std=0.5)
    out = tmp_path / "out" / "vpt.md"
    assert mod.main(["--roots", str(tmp_path / "runs"), str(tmp_path / "nope"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    text = out.read_text()
    assert text in captured.out and "nope" in captured.err
    assert cells(text)["cartpole / yes"]["FC"] == "2.0 ± 0.5 (h16, 10 ep, 1.6 h)"
    assert not list(out.parent.glob(".*tmp"))


def test_reproduce_writes_the_delegated_table(tmp_path, capsys):
    from keycld.cli import main
    root = tmp_path / "reproduce"
    for i, model in enumerate(REPRO_MODELS):
        for j, (env, control) in enumerate(DATASETS):
            fake_run(root / f"{model}-{env}-random-{control}", model=model, environment=env, control=control,
                     mean=float(i * 10 + j), std=0.0, epochs=1)
    assert main(["reproduce", "--root", str(root)]) == 0  # every vpt.json exists: nothing is trained
    text = (root / "vpt_table.md").read_text()
    assert render_table(collect_runs([root]), base=root) in text
    assert vpt_table(root) in text
    table = cells(text)
    assert table["acrobot / yes"]["FC"] == "37.0 ± 0.0 (h16, 1 ep, 1.6 h)"
    assert "`fc-acrobot-random-yes`" in text


def test_fine_tuned_run_counts_its_source_budget(tmp_path):
    """A run started with --init_from outranks its source and reports both budgets (5+3 ep)."""
    source = fake_run(tmp_path / "root" / "first", environment="acrobot", mean=20.9, epochs=5, wall=3600.0)
    fake_run(tmp_path / "root" / "tuned", environment="acrobot", mean=35.9, epochs=3, wall=1800.0,
             init_from=str(source))
    md = render_table(collect_runs([tmp_path / "root"]))
    cell = cells(md)["acrobot / yes"]["KeyCLD"]
    assert cell.startswith("35.9 ± ") and "5+3 ep" in cell and "1.5 h" in cell, cell


def test_reproduce_runs_a_subset_with_the_chosen_preset(tmp_path, capsys):
    from keycld.cli import main
    root = tmp_path / "reproduce"
    fake_run(root / "keycld-pendulum-random-yes", environment="pendulum", control="yes", mean=5.0, std=1.0)
    args = ["reproduce", "--root", str(root), "--datasets", "pendulum/yes", "cartpole/no", "--models", "keycld",
            "node2", "--preset", "cpu", "--dry_run"]
    assert main(args) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if line.startswith("$ ")]
    # 2 × 2 cells, one already measured (skipped)
    assert len(commands) == 3
    assert all("--preset=cpu" in c and "--num_epochs=40" not in c for c in commands)
    assert {c.split("--out=")[1].split()[0].rsplit("/", 1)[1] for c in commands} == {
        "keycld-cartpole-random-no", "node2-pendulum-random-yes", "node2-cartpole-random-no"}
    assert main(["reproduce", "--root", str(root), "--datasets", "pendulum/yes", "--dry_run"]) == 0
    paper = [line for line in capsys.readouterr().out.splitlines() if line.startswith("$ ")]
    assert len(paper) == len(REPRO_MODELS) - 1 and all("--num_epochs=40" in c for c in paper)
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "--datasets", "pendulum/underactuated", "--dry_run"])
    assert exit_info.value.code == 2
    assert "unknown dataset 'pendulum/underactuated'; allowed: pendulum/no, pendulum/yes" in capsys.readouterr().err
