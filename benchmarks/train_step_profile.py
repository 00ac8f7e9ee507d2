"""Where each U-Net's time goes inside its jitted forward + backward, per layer and per op kind.

    python benchmarks/train_step_profile.py [--hidden 16 32] [--repeats 7]

``benchmarks/train_step_layers.py`` times every layer alone; the networks jitted whole take
longer than their layers' sum. This script traces the whole networks as the training step
runs them (``jax.profiler``: one event per XLA thunk, on every thread) and attributes
their wall clock:

* each traced XLA op is mapped, through the compiled HLO's metadata, to its layer (the flax
  module ``SplitConv_i`` / ``GroupNorm_i``; ops of neither, such as max pooling, go to
  "between modules"), its direction (forward, or backward: ``transpose(jvp(...))``) and its
  kind (convolution, dot, layout copy/transpose, concatenate/pad/slice, other fusion);
* where ops overlap (the thunk executor runs independent thunks on both cores) each instant
  is split equally among the ops running then, so the rows plus "no op running" sum to the
  traced calls' wall clock;
* dot and convolution thunks run asynchronously on the thread pool (their traced event ends
  when the work is handed over), so a stretch with no op running right after one of them is
  that op's work;
* the same layers timed alone (``train_step_layers.time_layer``, forward + backward) in the
  same run, for comparison row by row.

Writes results/train_step_profile.{json,md}.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_step_layers import BATCH, layers, network_grads, time_layer  # noqa: E402

# flax module of each U-Net layer -> the rows of train_step_layers' per-layer table it holds
MODULE_LAYERS = {
    "SplitConv_0": ["c1 conv", "c1 static seed conv (once)"], "GroupNorm_0": ["c1 GroupNorm+ReLU"],
    "SplitConv_1": ["c2 conv"], "GroupNorm_1": ["c2 GroupNorm+ReLU"],
    "SplitConv_2": ["c3 conv"], "GroupNorm_2": ["c3 GroupNorm+ReLU"],
    "SplitConv_3": ["u2 conv (upsampled c3)", "u2 conv (skip c2)"], "GroupNorm_3": ["u2 GroupNorm+ReLU"],
    "SplitConv_4": ["u1 conv (upsampled u2)", "u1 conv (skip c1)"], "GroupNorm_4": ["u1 GroupNorm+ReLU"],
    "SplitConv_5": ["out conv"],
}
BETWEEN = "between modules (pooling, sums)"
OUTSIDE = "outside the U-Net (Gaussian maps, sigmoid)"
UNATTRIBUTED = "no metadata"
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*?\b([a-z][\w\-]*)\(")
_OPERANDS = re.compile(r"%([\w.\-]+)")
_MODULE = re.compile(r"(SplitConv_\d+|GroupNorm_\d+)")


def hlo_ops(hlo_text: str) -> dict[str, dict]:
    """Instructions of the compiled HLO's entry computation: name -> {opcode, layer, direction, kind}.

    Layer and direction come from the op's ``op_name`` metadata; XLA leaves some ops without
    it (a kernel gradient's convolution, whose bitcast user carries it; layout copies), and
    those take it from their nearest users, else operands, that have it.
    """
    start = hlo_text.find("\nENTRY ")
    if start < 0:
        raise ValueError("the HLO text has no ENTRY computation (expected a compiled module's as_text())")
    entry = hlo_text[start:]
    entry = entry[:entry.find("\n}") % (len(entry) + 1)]
    op_name, opcode, operands = {}, {}, {}
    for line in entry.splitlines()[1:]:
        m = _INSTR.match(line)
        if not m:
            continue
        name, opcode[name] = m.groups()
        meta = re.search(r'op_name="(jit\([^"]*)"', line)  # traced ops only, not parameters' names
        op_name[name] = meta.group(1) if meta else None
        args = line.split("=", 1)[1].split(", metadata=")[0]
        operands[name] = [a for a in _OPERANDS.findall(args) if a != name]
    users = defaultdict(list)
    for name, args in operands.items():
        for a in args:
            users[a].append(name)
    changed = True
    while changed:  # users first, then operands, until nothing more resolves
        changed = False
        for name in op_name:
            if op_name[name] is None:
                known = [n for n in users[name] + operands[name] if op_name.get(n)]
                if known:
                    op_name[name], changed = op_name[known[0]], True
    ops = {}
    for name, meta in op_name.items():
        module = _MODULE.search(meta or "")
        layer = (module.group(1) if module else BETWEEN if "UNet_0" in meta else OUTSIDE) if meta else UNATTRIBUTED
        ops[name] = dict(opcode=opcode[name], layer=layer,
                         direction="backward" if meta and "transpose(" in meta else "forward",
                         kind=_kind(name, opcode[name]))
    return ops


def _kind(name: str, opcode: str) -> str:
    if opcode == "convolution":
        return "convolution"
    if opcode == "dot" or name.startswith("dot"):
        return "dot"
    if "transpose" in name or name.startswith(("copy", "bitcast_copy")) or opcode in ("copy", "transpose"):
        return "layout copy / transpose"
    if opcode in ("concatenate", "pad", "slice") or any(w in name for w in ("concatenate", "pad", "slice")):
        return "concatenate / pad / slice"
    if opcode == "parameter" or opcode == "constant":
        return "other"
    return "other fusion (elementwise, reductions)"


def attribute(events: list[tuple[int, int, str]], windows: list[tuple[int, int]],
              async_ops: frozenset[str] = frozenset()) -> tuple[dict[str, float], float, float]:
    """Split each window's wall clock among the ops running at each instant.

    events: (start ns, end ns, op name) of traced ops on all threads; windows: (start ns, end ns)
    of the traced calls; async_ops: ops whose traced event ends when their work is handed to the
    thread pool (XLA's dot and convolution thunks on the CPU), so a stretch with no op running
    right after one of them is still that op's work and goes to it. Returns (op name ->
    attributed ns, ns with no op running otherwise, window ns).
    """
    share: dict[str, float] = defaultdict(float)
    idle = total = 0.0
    for w0, w1 in windows:
        total += w1 - w0
        points = []
        for s, e, name in events:
            s, e = max(s, w0), min(e, w1)
            if e > s:
                points += [(s, 1, name), (e, -1, name)]
        points.sort(key=lambda p: (p[0], p[1]))
        active: dict[str, int] = defaultdict(int)
        t, last_ended = w0, None
        for x, delta, name in points + [(w1, 0, None)]:
            running = [n for n, c in active.items() if c > 0]
            if running:
                for n in running:
                    share[n] += (x - t) / len(running)
            elif last_ended in async_ops:
                share[last_ended] += x - t
            else:
                idle += x - t
            t = x
            if name is not None:
                active[name] += delta
                if delta < 0:
                    last_ended = name
    return share, idle, total


def profile(fn, args: tuple, repeats: int) -> tuple[dict, float, float, float, str]:
    """Trace ``repeats`` calls of the jitted ``fn(*args)``: (op -> attributed s per call,
    no-op s per call, traced wall s per call, untraced median wall s per call, compiled HLO)."""
    import jax

    from _common import median_time

    jitted = jax.jit(fn)
    hlo = jitted.lower(*args).compile().as_text()
    jax.block_until_ready(jitted(*args))
    untraced = median_time(lambda: jax.block_until_ready(jitted(*args)), repeats)[0]
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        for _ in range(repeats):
            jax.block_until_ready(jitted(*args))
        jax.profiler.stop_trace()
        data = jax.profiler.ProfileData.from_file(str(next(Path(tmp).rglob("*.xplane.pb"))))
    names = set(_instruction_names(hlo))
    async_ops = frozenset(n for n, op in hlo_ops(hlo).items() if op["kind"] in ("convolution", "dot"))
    events, calls = [], []
    for plane in data.planes:
        for line in plane.lines:
            for ev in line.events:
                if ev.name in names:
                    events.append((ev.start_ns, ev.start_ns + ev.duration_ns, ev.name))
                elif ev.name.startswith("PjitFunction("):
                    calls.append((ev.start_ns, ev.start_ns + ev.duration_ns))
    calls.sort()
    calls = [s for i, (s, e) in enumerate(calls) if not any(s0 <= s and e <= e0 for s0, e0 in calls[:i])]  # outermost
    if len(calls) != repeats or not events:
        raise RuntimeError(f"the trace holds {len(calls)} calls (expected {repeats}) and {len(events)} XLA ops")
    # call i runs from its dispatch to the next call's dispatch (the last: to its last op's end)
    windows = list(zip(calls, calls[1:] + [max(e for _, e, _ in events)]))
    share, idle, total = attribute(events, windows, async_ops)
    per_call = {n: s / 1e9 / repeats for n, s in share.items()}
    # idle before a call's first op (dispatch) and after its last (return to Python) vs between ops
    edges, n_ops = 0, 0
    for w0, w1 in windows:
        inside = [(s, e) for s, e, _ in events if w0 <= s < w1]
        n_ops += len(inside)
        edges += (min(s for s, _ in inside) - w0) + (w1 - max(e for _, e in inside))
    idle_s = dict(total=idle / 1e9 / repeats, edges=edges / 1e9 / repeats, ops=n_ops / repeats)
    return per_call, idle_s, total / 1e9 / repeats, untraced, hlo


def _instruction_names(hlo: str):
    for line in hlo.splitlines():
        m = _INSTR.match(line)
        if m:
            yield m.group(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    import keycld  # noqa: F401  (applies the XLA flag before jax starts)
    from _common import machine, write_results

    data = {"machine": machine(), "batch": BATCH, "results": []}
    table = []
    k = 1  # pendulum: one keypoint, as train_step_layers
    for h in args.hidden:
        alone_rows = {"encoder": layers(h, 3, k, 0), "renderer": layers(h, k, 3, max(h - k, 1))}
        for net, (fn, fn_args) in network_grads("pendulum", h).items():
            per_op, idle, traced_s, untraced_s, hlo = profile(fn, fn_args, args.repeats)
            idle_s = idle["total"]
            ops = hlo_ops(hlo)
            by_layer = defaultdict(lambda: defaultdict(float))
            by_kind = defaultdict(float)
            for name, sec in per_op.items():
                op = ops.get(name, dict(layer=UNATTRIBUTED, direction="forward", kind="other"))
                by_layer[op["layer"]][op["direction"]] += sec
                by_kind[op["kind"]] += sec
            alone = {row["name"]: time_layer(row, args.repeats)[1] for row in alone_rows[net]}
            rec = dict(hidden=h, network=net, untraced_s=untraced_s, traced_s=traced_s, no_op_s=idle_s,
                       no_op_edges_s=idle["edges"], ops_per_call=idle["ops"],
                       layers={}, kinds=dict(by_kind))
            order = list(MODULE_LAYERS) + [BETWEEN, OUTSIDE, UNATTRIBUTED]
            for layer in order:
                if layer not in by_layer and layer not in MODULE_LAYERS:
                    continue
                fwd, bwd = by_layer[layer]["forward"], by_layer[layer]["backward"]
                if layer in MODULE_LAYERS:
                    names = [n for n in MODULE_LAYERS[layer] if n in alone]
                else:
                    names = [n for n in alone if n.startswith("pool")] if layer == BETWEEN else []
                alone_s = sum(alone[n] for n in names) if names else None
                rec["layers"][layer] = dict(forward_s=fwd, backward_s=bwd, alone_rows=names, alone_s=alone_s)
                table.append([str(h), net, f"{layer}" + (f" ({', '.join(names)})" if names else ""),
                              f"{fwd * 1e3:.1f}", f"{bwd * 1e3:.1f}", f"{(fwd + bwd) * 1e3:.1f}",
                              f"{alone_s * 1e3:.1f}" if alone_s is not None else "",
                              f"{(fwd + bwd) / alone_s:.2f}" if alone_s else ""])
                print(table[-1], flush=True)
            gaps_s = idle_s - idle["edges"]
            table.append([str(h), net, f"no op running: between the call's {idle['ops']:.0f} ops "
                          f"({gaps_s / max(idle['ops'] - 1, 1) * 1e6:.0f} µs per op)", "", "", f"{gaps_s * 1e3:.1f}", "", ""])
            table.append([str(h), net, "no op running: before the first op and after the last (dispatch, return)",
                          "", "", f"{idle['edges'] * 1e3:.1f}", "", ""])
            alone_total = sum(alone.values())
            table.append([str(h), net, f"**traced call** (untraced: {untraced_s * 1e3:.1f})", "", "",
                          f"{traced_s * 1e3:.1f}", f"{alone_total * 1e3:.1f}", f"{traced_s / alone_total:.2f}"])
            for kind, sec in sorted(by_kind.items(), key=lambda kv: -kv[1]):
                table.append([str(h), net, f"by kind: {kind}", "", "", f"{sec * 1e3:.1f}", "", f"{sec / traced_s:.0%} of call"])
            data["results"].append(rec)
            print(table[-5:], flush=True)
    notes = (f"`python benchmarks/train_step_profile.py --hidden {' '.join(map(str, args.hidden))} --repeats {args.repeats}`: "
             f"each network's forward + backward jitted whole, as the training step runs it (batch {BATCH} frames of "
             "64×64, float32, pendulum: one keypoint; encoder gradients for its parameters, renderer for its "
             "parameters and keypoints), traced over the repeats; ms per call. 'in context' = wall clock of the "
             "layer's XLA ops (each instant split among the ops running then); 'alone' = the same layers timed "
             "alone, forward + backward, in the same run (`train_step_layers.time_layer`: gradients for input and "
             "parameters); 'ratio' = in context / alone. XLA's dot and convolution thunks hand their work to the "
             "thread pool and their traced event ends at once, so a stretch with no op running right after one "
             "of them counts as that op's time; 'no op running' is what remains. The 'by kind' rows split the "
             "traced call by XLA op kind.")
    md = write_results("train_step_profile", data, table,
                       ["h", "network", "layer (rows of train_step_layers)", "fwd ms", "bwd ms", "in context ms",
                        "alone ms", "ratio"], notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
