"""Decoding throughput: the KV-cached sampler against recomputing the whole sequence.

Both decode greedily, jitted, from the same randomly initialised model, batch
of prompts of different lengths and per-row switches. The baseline keeps a
fixed buffer of P + N tokens and runs the full model over it for every new
token (one compile, as the project's decoder did before the cache); each of
its steps costs the same, so timing its first `--baseline_steps` steps gives
its throughput for all N. The two must emit the same tokens over those steps.

  python benchmarks/decode.py [--shapes tiny,mid] [--batch 8] [--new_tokens 256]
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nullearn import sampler
from nullearn.configs import mid, tiny
from nullearn.model import ModelConfig, Transformer
from nullearn.switch import Switch


def parse_args():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--shapes", default="tiny,mid")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--new_tokens", type=int, default=256)
  p.add_argument("--baseline_steps", type=int, default=8)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--out", default="benchmarks/results/decode.json")
  return p.parse_args()


def model_config(name: str) -> ModelConfig:
  c = {"tiny": tiny, "mid": mid}[name].get_config()
  if jax.default_backend() == "cpu":  # bfloat16 matmuls are emulated on CPU
    c.model.dtype = "float32"
  return ModelConfig.from_config(c.model)


@functools.partial(jax.jit, static_argnums=(0, 5))
def recompute(graphdef, params, tokens_BxL, lengths_B, switch: Switch, num_tokens: int):
  """Greedy tokens by running the model over the whole right-padded buffer for each one."""
  model = nnx.merge(graphdef, params)
  B, L = tokens_BxL.shape
  rows_B = jnp.arange(B)
  positions_BxL = jnp.broadcast_to(jnp.arange(L), (B, L))

  def step(i, tokens_BxL):
    length_B = lengths_B + i
    segment_ids_BxL = (positions_BxL < length_B[:, None]).astype(jnp.int32)
    h_BxLxD = model.hidden(tokens_BxL, segment_ids_BxL, positions_BxL, switch)
    logits_Bx1xV = model.logits(h_BxLxD[rows_B, length_B - 1][:, None])
    return tokens_BxL.at[rows_B, length_B].set(jnp.argmax(logits_Bx1xV[:, 0], -1))

  tokens_BxL = jax.lax.fori_loop(0, num_tokens, step, tokens_BxL)
  return tokens_BxL[rows_B[:, None], lengths_B[:, None] + jnp.arange(num_tokens)]


def timed(fn, repeats: int):
  """(median seconds of `repeats` calls after a first (compiling) one, its seconds, output)."""
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn())
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), compile_s, out


def bench(name: str, args) -> dict:
  cfg = model_config(name)
  graphdef, params = nnx.split(Transformer(cfg, nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  B, N = args.batch, args.new_tokens
  lengths = rng.integers(8, 65, B)
  prompts = [np.r_[1, rng.integers(4, cfg.vocab_size, n - 1)].astype(np.int32) for n in lengths]
  switch = Switch.sources(rng.integers(0, 2**32, (B, 1), dtype=np.uint32))

  cached_s, cached_compile, got = timed(
    lambda: sampler.sample(graphdef, params, prompts, switch, N, eos_id=None).tokens, args.repeats
  )
  buffer = np.zeros((B, lengths.max() + N), np.int32)
  for i, p in enumerate(prompts):
    buffer[i, : len(p)] = p
  steps = min(args.baseline_steps, N)
  t0 = time.perf_counter()
  baseline = recompute.lower(
    graphdef, params, buffer, lengths.astype(np.int32), switch, steps
  ).compile()
  base_compile = time.perf_counter() - t0
  base_s, _, want = timed(lambda: baseline(params, buffer, lengths.astype(np.int32), switch), 1)
  cached_tps, base_tps = B * N / cached_s, B * steps / base_s
  return dict(
    shape=name,
    batch=B,
    new_tokens=N,
    prompt_lengths=lengths.tolist(),
    buffer=int(buffer.shape[1]),
    cached_tokens_per_s=cached_tps,
    uncached_tokens_per_s=base_tps,
    speedup=cached_tps / base_tps,
    cached_s=cached_s,
    uncached_s=base_s,
    uncached_steps_timed=steps,
    cached_compile_s=cached_compile,
    uncached_compile_s=base_compile,
    same_tokens=float(np.mean(np.asarray(got)[:, :steps] == np.asarray(want))),
    d_model=cfg.d_model,
    num_layers=cfg.num_layers,
    mlp_dim=cfg.mlp_dim,
    sink_impl=cfg.sink_impl,
    dtype=cfg.dtype,
    vocab_size=cfg.vocab_size,
  )


def main():
  args = parse_args()
  rows = []
  for name in args.shapes.split(","):
    rows.append(bench(name, args))
    print(json.dumps(rows[-1]), flush=True)
  header = (
    f"{'shape':<6}{'batch':>6}{'new':>5}{'cached tok/s':>14}{'uncached tok/s':>16}"
    f"{'speedup':>9}{'same tokens':>13}"
  )
  print(header)
  print("-" * len(header))
  for r in rows:
    print(
      f"{r['shape']:<6}{r['batch']:>6}{r['new_tokens']:>5}{r['cached_tokens_per_s']:>14.1f}"
      f"{r['uncached_tokens_per_s']:>16.1f}{r['speedup']:>8.1f}x{r['same_tokens']:>13.1%}"
    )
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(
    json.dumps(
      {"device": jax.devices()[0].device_kind, "argv": sys.argv[1:], "rows": rows}, indent=1
    )
  )
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
