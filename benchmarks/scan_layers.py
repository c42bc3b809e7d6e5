"""Compile and step time of scanned blocks (`model.scan_layers`) against unrolled ones.

The tiny config's width (CPU-sized), at 8 and 32 layers: an unrolled step's
compile time grows with depth, a scanned one's should not. Steps of the two
layouts are interleaved so drift in the machine's speed hits both alike. Times
are this process's CPU seconds (all its threads), which a machine shared with
other work inflates far less than wall-clock seconds; both are recorded.

  python benchmarks/scan_layers.py [--layers 8,32] [--steps 5] [--remat full]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import numpy as np
from batches import synthetic_batch

from nullearn import train
from nullearn.configs import tiny


def parse_args():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--layers", default="8,32")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--remat", default="full", help="model.remat for both layouts")
  p.add_argument("--out", default="benchmarks/results/scan_layers.json")
  return p.parse_args()


def prepare(layers: int, scan: bool, remat: str) -> dict:
  c = tiny.get_config()
  c.model.update(dict(num_layers=layers, scan_layers=scan, remat=remat))
  c.data.update(dict(batch_size=8, seq_len=128))
  setup = train.make_setup(c, steps=1000)
  state = train.init_state(setup)
  batch = train.device_batch(synthetic_batch(c, np.random.default_rng(0)), setup.mesh)
  with jax.set_mesh(setup.mesh):
    t0, c0 = time.perf_counter(), time.process_time()
    step = train.make_train_step(setup).lower(state, batch).compile()
    compile_s, compile_wall_s = time.process_time() - c0, time.perf_counter() - t0
    state, _ = step(state, batch)  # warm-up
    jax.block_until_ready(state)
  return dict(
    layers=layers,
    scan=scan,
    setup=setup,
    state=state,
    step=step,
    batch=batch,
    compile_s=compile_s,
    compile_wall_s=compile_wall_s,
    times=[],
    wall=[],
  )


def main():
  args = parse_args()
  rows = []
  for layers in [int(n) for n in args.layers.split(",")]:
    runs = [prepare(layers, scan, args.remat) for scan in (False, True)]
    for _ in range(args.steps):
      for r in runs:
        with jax.set_mesh(r["setup"].mesh):
          t0, c0 = time.perf_counter(), time.process_time()
          r["state"], _ = r["step"](r["state"], r["batch"])
          jax.block_until_ready(r["state"])
          r["times"].append(time.process_time() - c0)
          r["wall"].append(time.perf_counter() - t0)
    unrolled = runs[0]
    for r in runs:
      step_ms = 1e3 * float(np.median(r["times"]))
      rows.append(
        dict(
          layers=layers,
          layout="scanned" if r["scan"] else "unrolled",
          remat=args.remat,
          compile_s=r["compile_s"],
          compile_wall_s=r["compile_wall_s"],
          step_ms=step_ms,
          step_wall_ms=1e3 * float(np.median(r["wall"])),
          compile_vs_unrolled=r["compile_s"] / unrolled["compile_s"],
          step_vs_unrolled=step_ms / (1e3 * float(np.median(unrolled["times"]))),
          d_model=r["setup"].model_cfg.d_model,
          mlp_dim=r["setup"].model_cfg.mlp_dim,
          batch=8,
          seq_len=128,
        )
      )
  header = (
    f"{'layers':>6}{'layout':>10}{'compile CPU s':>15}{'vs unrolled':>13}"
    f"{'step CPU ms':>13}{'vs unrolled':>13}"
  )
  print(header)
  print("-" * len(header))
  for r in rows:
    print(
      f"{r['layers']:>6}{r['layout']:>10}{r['compile_s']:>15.1f}"
      f"{r['compile_vs_unrolled']:>13.2f}{r['step_ms']:>13.1f}{r['step_vs_unrolled']:>13.2f}"
    )
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(
    json.dumps(
      {
        "device": jax.devices()[0].device_kind,
        "steps": args.steps,
        "argv": sys.argv[1:],
        "rows": rows,
      },
      indent=1,
    )
  )
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
