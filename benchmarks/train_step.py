"""Training throughput of the full KeyCLD loss (forward + backward + Adam), in one run.

    python benchmarks/train_step.py [--repeats 5] [--rounds 1]

Rows: pendulum and cartpole at the paper's configuration (h = 32, 50 frames, batch 1, Euler,
4 predicted steps), the --preset cpu width (h = 16), the plain U-Net computation (same
function, no SplitConv) as an in-run baseline, each in a subprocess per process setting
(both must be set before the process, or jax, starts): as ``keycld train`` runs (XLA flag on,
tcmalloc), with glibc's malloc instead (no tcmalloc preloaded, as ``KEYCLD_ALLOCATOR=system``; page faults and system CPU
time per step are recorded), and without the XLA flag (``KEYCLD_NO_XLA_FLAGS=1``).
``--rounds`` R runs the settings' subprocesses R times in turn and reports each row's median
over the rounds (this machine's speed drifts by ±15% within minutes).
The paper code's step times (``ORIGINAL_STEP_S``: pendulum 2.15 s, cartpole 2.05 s per 50-frame
step at h = 32; pendulum 0.64 s at h = 16) are constants for this machine type, measured on
another day with an older jax; where they come from: benchmarks/results/history/README.md.
This machine's speed varies from day to day by up to 2×, so with ``--original-src DIR`` (a
checkout of github.com/rdaems/keycld) the original code's step is also measured in the same run,
in every round and process setting (``benchmarks/original_step.py``), and 'vs original (same
run)' divides that by ours.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# seconds per 50-frame training step of the paper's code on this machine type, per (system, h)
ORIGINAL_STEP_S = {("pendulum", 32): 2.15, ("cartpole", 32): 2.05, ("pendulum", 16): 0.64}
FLOP_BOUND_FPS = 110.0  # 3.4 GFLOP per frame fwd+bwd at 387 GFLOP/s (plain architecture)


def step_inputs(num_actions: int):
    """The benchmark batch: frames (1, 50, 64, 64, 3) uint8 and actions (1, num_actions) float32,
    fixed random values (seed 0)."""
    import numpy as np

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (1, 50, 64, 64, 3), dtype=np.uint8)
    return frames, rng.uniform(-2, 2, (1, num_actions)).astype(np.float32)


NETWORKS = {"onednn": "SplitConv, oneDNN convs", "xla": "SplitConv, XLA convs", "plain": "plain U-Net",
            None: "original code"}


def measure(environment: str, hidden: int, net: str, repeats: int) -> dict:
    """Time our training step with the networks ``net``: "onednn" (as ``keycld train`` runs on a
    CPU with PyTorch), "xla" (the same SplitConv networks on XLA's convolutions) or "plain"
    (the plain U-Net computation of the same function)."""
    import resource
    import time

    import jax
    import numpy as np

    from keycld.config import TrainConfig
    from keycld.model.keycld import KeyCLD
    from keycld.train import init_state, make_train_step

    cfg = TrainConfig(environment=environment, num_hidden_dim=hidden)
    model = KeyCLD.from_config(cfg)
    import dataclasses
    model = dataclasses.replace(model, fast_convs=net != "plain", conv_backend="onednn" if net == "onednn" else "xla")
    import keycld.train as T
    state = init_state(cfg, model)
    step = T.make_train_step(cfg, model)
    frames, act = step_inputs(model.num_actions)
    t = time.perf_counter()
    state, m = step(state, frames, act)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t
    times = []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        t = time.perf_counter()
        state, m = step(state, frames, act)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    med = float(np.median(times))
    return dict(environment=environment, hidden=hidden, net=net, compile_s=compile_s, step_s=med,
                times_s=times, frames_per_s=50 / med, epoch_s=450 * med,
                page_faults_per_step=(r1.ru_minflt - r0.ru_minflt) / repeats,
                system_s_per_step=(r1.ru_stime - r0.ru_stime) / repeats)


def child(args) -> None:
    from keycld._allocator import tcmalloc_loaded

    out = [measure(e, h, f, args.repeats) for e, h, f in json.loads(args.child)]
    for r in out:
        r["tcmalloc"] = tcmalloc_loaded()
        r["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    print("RESULT " + json.dumps(out))


def ynn_flag_set(xla_flags: str) -> bool:
    """True when ``XLA_FLAGS`` holds keycld's flag (YNNPACK fusion off) exactly."""
    from keycld._xla import YNN_FLAG

    return YNN_FLAG in xla_flags.split()


def setting_env(xla_flag: bool, tcmalloc: bool) -> dict[str, str]:
    """The environment of a measuring subprocess: the XLA flag on or off, tcmalloc preloaded or
    glibc's malloc (ValueError when tcmalloc is asked for and not installed)."""
    from keycld import _allocator
    from keycld._xla import YNN_FLAG

    env = {k: v for k, v in os.environ.items() if k not in ("KEYCLD_NO_XLA_FLAGS", _allocator.REEXEC_VAR)}
    env["LD_PRELOAD"] = " ".join(p for p in env.get("LD_PRELOAD", "").split() if "tcmalloc" not in p)
    if not xla_flag:
        # this process imported keycld, which put the flag into its own XLA_FLAGS: take it out again
        env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                    if not f.startswith(YNN_FLAG.rstrip("=")))
        env["KEYCLD_NO_XLA_FLAGS"] = "1"
    if tcmalloc:
        env[_allocator.ALLOCATOR_VAR] = "tcmalloc"
        env = _allocator.tcmalloc_environment(env)
    return env


def _result_line(res: subprocess.CompletedProcess) -> list[dict]:
    line = [l for l in res.stdout.splitlines() if l.startswith("RESULT ")]
    if not line:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(line[0][7:])


def main() -> None:
    from keycld.cliutil import StrictParser, positive_int

    ap = StrictParser()
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--rounds", type=positive_int, default=1)
    ap.add_argument("--original-src", type=Path, default=None,
                    help="a checkout of github.com/rdaems/keycld: also time the original code's step in this run")
    ap.add_argument("--settings", choices=("all", "keycld"), default="all",
                    help="process settings: all three, or only keycld train's (XLA flag on, tcmalloc)")
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.original_src is not None:
        from original_step import src_error

        if (error := src_error(args.original_src)) is not None:
            ap.error(f"--original-src {error}")
        args.original_src = args.original_src.resolve()  # its subprocess runs elsewhere
    import numpy as np

    from _common import machine, write_results

    cases = [("pendulum", 32, "onednn"), ("pendulum", 32, "xla"), ("pendulum", 32, "plain"),
             ("cartpole", 32, "onednn"), ("cartpole", 32, "xla"), ("pendulum", 16, "onednn"), ("pendulum", 16, "xla"),
             ("cartpole", 16, "onednn"), ("cartpole", 16, "xla")]
    settings = [(True, True), (True, False), (False, True)]  # (XLA flag, tcmalloc)
    if args.settings == "keycld":
        settings = settings[:1]
    original_cases = sorted({(e, h) for e, h, _ in cases}, key=lambda c: (-c[1], c[0]))
    per_round: dict[tuple, list[dict]] = {}
    for _ in range(args.rounds):
        for flag, tc in settings:
            cmd = [sys.executable, __file__, "--repeats", str(args.repeats), "--child", json.dumps(cases)]
            results = _result_line(subprocess.run(cmd, env=setting_env(flag, tc), capture_output=True, text=True))
            if args.original_src is not None:
                cmd = [sys.executable, str(Path(__file__).with_name("original_step.py")), "--src",
                       str(args.original_src), "--cases", json.dumps(original_cases), "--repeats", str(args.repeats)]
                res = subprocess.run(cmd, env=setting_env(flag, tc), capture_output=True, text=True, cwd="/")
                results += [dict(r, net=None) for r in _result_line(res)]
            for r in results:
                if r["tcmalloc"] != tc:
                    raise RuntimeError(f"the subprocess ran with tcmalloc {r['tcmalloc']}, expected {tc}")
                if ynn_flag_set(r["xla_flags"]) != flag:
                    raise RuntimeError(f"the subprocess ran with XLA_FLAGS={r['xla_flags']!r}, expected keycld's "
                                       f"YNN flag {'on' if flag else 'off'} (this script needs jax 0.10.x and no "
                                       "YNN setting of your own in XLA_FLAGS)")
                r["xla_flag"] = flag
                per_round.setdefault((flag, tc, r["environment"], r["hidden"], r["net"]), []).append(r)
    rows, data = [], {"machine": machine(), "rounds": args.rounds, "results": []}
    for runs in per_round.values():
        r = dict(runs[0])
        for key in ("step_s", "page_faults_per_step", "system_s_per_step", "compile_s", "update_s"):
            if key in r:
                r[key] = float(np.median([x[key] for x in runs]))
        r["step_s_per_round"] = [x["step_s"] for x in runs]
        r["frames_per_s"], r["epoch_s"] = 50 / r["step_s"], 450 * r["step_s"]
        data["results"].append(r)
    measured = {(r["xla_flag"], r["tcmalloc"], r["environment"], r["hidden"]): r for r in data["results"]
                if r["net"] is None}
    for r in data["results"]:
        orig = ORIGINAL_STEP_S.get((r["environment"], r["hidden"]))
        same = measured.get((r["xla_flag"], r["tcmalloc"], r["environment"], r["hidden"]))
        if same is not None and r["net"] is not None:
            # per round: the original and ours ran in the same round, minutes apart
            ratios = [o / x for o, x in zip(same["step_s_per_round"], r["step_s_per_round"])]
            r["vs_original_same_run"] = float(np.median(ratios))
        rows.append([r["environment"], str(r["hidden"]), NETWORKS[r["net"]],
                     "on" if r["xla_flag"] else "off", "tcmalloc" if r["tcmalloc"] else "glibc",
                     f"{r['step_s']:.3f}", f"{r['frames_per_s']:.1f}", f"{r['epoch_s'] / 60:.1f}",
                     f"{r['page_faults_per_step']:.0f}" if "page_faults_per_step" in r else "",
                     f"{r['system_s_per_step']:.3f}" if "system_s_per_step" in r else "",
                     f"{r['vs_original_same_run']:.2f}×" if "vs_original_same_run" in r else "",
                     f"{orig / r['step_s']:.2f}×" if orig and r["net"] is not None else "",
                     f"{r['frames_per_s'] / FLOP_BOUND_FPS:.0%}" if r["hidden"] == 32 else ""])
    cmd = f"python benchmarks/train_step.py --repeats {args.repeats} --rounds {args.rounds}"
    if args.settings != "all":
        cmd += f" --settings {args.settings}"
    if args.original_src is not None:
        cmd += " --original-src DIR"
    notes = (f"`{cmd}`: median of "
             f"{args.repeats} jitted steps (one 50-frame sequence, loss forward + backward + Adam) per subprocess, "
             f"median over {args.rounds} round(s) of the settings' subprocesses run in turn. Networks: 'SplitConv, "
             "oneDNN convs' = as `keycld train` runs on a CPU with PyTorch (--conv_backend auto: each SplitConv "
             "layer on PyTorch's oneDNN, keycld.model.onednn); 'SplitConv, XLA convs' = --conv_backend xla; "
             "'plain U-Net' = the same function computed the plain way, in XLA. 'allocator': tcmalloc "
             "(as the keycld command runs) or glibc's malloc; 'faults' = minor page faults and 'sys s' = system "
             "CPU seconds per step. 'original code' rows (with --original-src): the paper's code, its jitted "
             "loss + gradient without its optimiser update, in the same round and process setting "
             "(benchmarks/original_step.py); 'vs original (same run)' = the median over rounds of its step "
             "time over ours. 'vs original (constants)' divides the original "
             "code's step time on this machine type for the same system (the ORIGINAL_STEP_S constants: pendulum 2.15 s at h=32 and "
             "0.64 s at h=16, cartpole 2.05 s at h=32) by ours. "
             "'of bound' = frames/s over the ~110 frames/s FLOP bound of the plain architecture (3.4 GFLOP "
             "per frame at 387 GFLOP/s).")
    md = write_results("train_step", data, rows,
                       ["system", "h", "U-Net", "XLA flag", "allocator", "step s", "frames/s",
                        "epoch min (450 steps)", "faults", "sys s", "vs original (same run)",
                        "vs original (constants)", "of bound"], notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
