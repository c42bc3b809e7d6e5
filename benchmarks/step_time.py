"""Train-step time of a NULL against the plain transformer of the same shape.

Plain = every MLP neuron always on (pool 0, backbone = the whole width). The
NULL runs with the dense mask (the reference computation: all F neurons
computed, then masked) and with gathered sinks (only the backbone and each
document's own sinks computed). The NULL (gathered sinks) also runs once per
attention kernel (`model.attention`); a kernel this host cannot run is listed
as unavailable, not measured. Steps of the variants are interleaved so that
drift in the machine's speed hits all of them alike.

  python benchmarks/step_time.py [--shapes tiny,mid] [--steps 10] [--out FILE]
  python benchmarks/step_time.py --devices 8   # also: sharded over 8 faked CPU devices
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import sys
import time


def parse_args():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--shapes", default="tiny,mid")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument(
    "--devices",
    type=int,
    default=0,
    help="fake this many CPU devices and add a sharded run (data x fsdp mesh)",
  )
  p.add_argument("--out", default="benchmarks/results/step_time.json")
  return p.parse_args()


ARGS = parse_args()
if ARGS.devices:  # must precede the first import of jax
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ARGS.devices}"
  )

import jax  # noqa: E402
import numpy as np  # noqa: E402
from batches import synthetic_batch  # noqa: E402

from nullearn import attention, flops, sharding, train  # noqa: E402
from nullearn.configs import mid, tiny  # noqa: E402
from nullearn.model import make_plain  # noqa: E402


def shape_config(name: str):
  if name == "tiny":
    return tiny.get_config()
  if name == "mid":
    c = mid.get_config()
    if jax.default_backend() == "cpu":  # a CPU-sized batch in float32; the model is unchanged
      c.data.update(dict(batch_size=8, seq_len=256))
      c.model.dtype = "float32"
    return c
  raise ValueError(f"unknown shape {name!r}")


def variants(c):
  """(name, config) of plain, NULL dense and NULL gather, all of one width, then the NULL
  (gathered sinks) on each attention kernel."""
  out = []
  for name in ("plain", "null-dense", "null-gather"):
    v = copy.deepcopy(c)
    if name == "plain":
      make_plain(v.model)
    else:
      v.model.sink_impl = name.split("-")[1]
    out.append((name, v))
  for impl in attention.IMPLEMENTATIONS[1:]:
    v = copy.deepcopy(c)
    v.model.update(dict(sink_impl="gather", attention=impl))
    out.append((f"attn-{impl}", v))
  return out


def runs_here(c) -> bool:
  try:
    attention.resolve(c.model.attention, c.model.dtype)
  except ValueError:
    return False
  return True


def bench_shape(name: str, steps: int, mesh) -> list[dict]:
  c = shape_config(name)
  runs, unavailable = [], []
  for vname, v in variants(c):
    if not runs_here(v):
      unavailable.append(
        dict(
          shape=name,
          devices=mesh.size,
          variant=vname,
          step_ms=None,
          unavailable=f"unavailable on {jax.default_backend()}",
        )
      )
      continue
    setup = train.make_setup(v, steps=1000, mesh=mesh)
    state = train.init_state(setup)
    step = train.make_train_step(setup)
    batch = train.device_batch(synthetic_batch(v, np.random.default_rng(0)), setup.mesh)
    with jax.set_mesh(setup.mesh):
      t0 = time.perf_counter()
      state, _ = step(state, batch)
      jax.block_until_ready(state)
      compile_s = time.perf_counter() - t0
      state, _ = step(state, batch)
    runs.append(
      dict(
        variant=vname,
        setup=setup,
        state=state,
        step=step,
        batch=batch,
        times=[],
        compile_s=compile_s,
        config=v,
      )
    )
  for _ in range(steps):  # interleaved: plain, dense, gather, plain, ...
    for r in runs:
      with jax.set_mesh(r["setup"].mesh):
        t0 = time.perf_counter()
        r["state"], _ = r["step"](r["state"], r["batch"])
        jax.block_until_ready(r["state"])
        r["times"].append(time.perf_counter() - t0)
  plain = float(np.median(runs[0]["times"]))
  tokens = c.data.batch_size * c.data.seq_len
  peak = flops.peak_flops()
  rows = []
  for r in runs:
    med = float(np.median(r["times"]))
    m = r["setup"].model_cfg
    flops_per_token = flops.train_flops_per_token(m, c.data.seq_len)
    rows.append(
      dict(
        shape=name,
        devices=mesh.size,
        mesh=dict(mesh.shape),
        variant=r["variant"],
        step_ms=1e3 * med,
        step_ms_min=1e3 * float(np.min(r["times"])),
        ratio_to_plain=med / plain,
        tokens_per_sec=tokens / med,
        compile_s=r["compile_s"],
        flops_per_token=flops_per_token,
        dtype=m.dtype,
        mfu=flops_per_token * tokens / med / (peak * mesh.size) if peak else None,
        d_model=m.d_model,
        num_layers=m.num_layers,
        mlp_dim=m.mlp_dim,
        backbone=m.backbone,
        pool=m.pool,
        active=m.active,
        batch=c.data.batch_size,
        seq_len=c.data.seq_len,
        attention=attention.resolve(m.attention, m.dtype),
      )
    )
  return rows + unavailable


def main():
  meshes = [("1 device", sharding.make_mesh(devices=jax.devices()[:1]))]
  if ARGS.devices:
    meshes.append((f"{ARGS.devices} devices", sharding.make_mesh(data=2, fsdp=-1, tensor=1)))
  rows = []
  for shape in ARGS.shapes.split(","):
    for _, mesh in meshes:
      rows += bench_shape(shape, ARGS.steps, mesh)
  header = (
    f"{'shape':<6}{'devices':>8}{'variant':>16}{'step ms':>10}{'tok/s':>11}"
    f"{'vs plain':>10}{'MFU':>7}"
  )
  print(header)
  print("-" * len(header))
  for r in rows:
    if r["step_ms"] is None:
      print(f"{r['shape']:<6}{r['devices']:>8}{r['variant']:>16}  {r['unavailable']}")
      continue
    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "–"
    print(
      f"{r['shape']:<6}{r['devices']:>8}{r['variant']:>16}{r['step_ms']:>10.1f}"
      f"{r['tokens_per_sec']:>11.0f}{r['ratio_to_plain']:>10.3f}{mfu:>7}"
    )
  out = pathlib.Path(ARGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(
    json.dumps(
      {
        "device": jax.devices()[0].device_kind,
        "steps": ARGS.steps,
        "argv": sys.argv[1:],
        "rows": rows,
      },
      indent=1,
    )
  )
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
