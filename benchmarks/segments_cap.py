"""Dense mask against gathered sinks for the 1B shape, and the packing cap that gathering needs.

Gathered sinks compute, for every token, the backbone plus `max_segments *
active` columns (its row's documents' sinks), so a higher cap costs compute per
token while a lower one leaves rows part empty (packing may not add a document
beyond the cap). Measured on this CPU:

- packing fill: the share of non-padding tokens in 1024-token rows packed from
  synthetic articles with Wikipedia's lengths (median ~2.5k characters, long
  lognormal tail) under caps 4, 8, 16 and no cap (the dense path needs none),
  tokenized with the 49,152-piece tokenizer the pipeline benchmark trains;
- train-step time of the 1B shape (d 960, MLP 500 + 7692, 100 active, vocab
  49152, the config's remat and scanned layers, float32 on CPU) at 1 and 2
  layers, extrapolated linearly to its 32 (a step is a fixed embedding and
  logits cost plus a cost per layer);
- tokens/s = fill x tokens a step / step time, against the dense mask's.

Step times are this process's CPU seconds (all its threads): a machine shared
with other work inflates them far less than wall-clock seconds.

  python benchmarks/segments_cap.py --tokenizer /tmp/tok49k.model [--articles 20000]
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import pathlib
import sys
import time

import jax
import numpy as np
from batches import synthetic_batch, wikipedia_like

from nullearn import flops, train
from nullearn.data import pipeline
from nullearn.data.tokenizer import Tokenizer
from nullearn.model import ModelConfig

CAPS = (4, 8, 16)
CONFIG = importlib.import_module("nullearn.configs.1b").get_config()


def parse_args():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--tokenizer", required=True, help="a 49,152-piece SentencePiece model")
  p.add_argument("--articles", type=int, default=3000)
  p.add_argument("--rows", type=int, default=1, help="rows a timed step")
  p.add_argument("--steps", type=int, default=2, help="timed steps (CPU time) after a warm-up")
  p.add_argument("--out", default="benchmarks/results/segments_cap.json")
  return p.parse_args()


def fill(docs, tokenizer, cap: int | None, config) -> dict:
  ds = pipeline.training_dataset(
    docs,
    tokenizer,
    seq_len=config.data.seq_len,
    batch_size=32,
    seed=0,
    num_epochs=1,
    packing_bins=config.data.packing_bins,
    max_segments=cap,
  )
  real = total = 0
  docs_per_row = []
  for batch in ds:
    seg = batch["segment_ids"]
    real += int((seg > 0).sum())
    total += seg.size
    docs_per_row += seg.max(axis=1).tolist()
  return dict(fill=real / total, docs_per_row=float(np.mean(docs_per_row)), rows=len(docs_per_row))


def model_config(impl: str, cap: int, layers: int, rows: int):
  c = copy.deepcopy(CONFIG)
  c.model.update(dict(sink_impl=impl, max_segments=cap, num_layers=layers, dtype="float32"))
  c.data.batch_size = rows
  c.mesh.update(dict(data=1, fsdp=1, tensor=1))
  return c


def main():
  args = parse_args()
  tokenizer = Tokenizer.load(args.tokenizer)
  docs = wikipedia_like(args.articles)
  lengths = np.array([len(d.text) for d in docs])
  fills = {cap: fill(docs, tokenizer, cap, CONFIG) for cap in (*CAPS, None)}
  print({k: round(v["fill"], 4) for k, v in fills.items()}, flush=True)
  variants = [("dense", max(CAPS))] + [("gather", cap) for cap in CAPS]
  runs = []
  for impl, cap in variants:
    for layers in (1, 2):
      c = model_config(impl, cap, layers, args.rows)
      setup = train.make_setup(c, steps=1000)
      state = train.init_state(setup)
      # Rows of `cap` documents: the gathered path's cost does not depend on how many
      # a row holds (every slot is computed), the dense path's does not either.
      batch = train.device_batch(synthetic_batch(c, np.random.default_rng(0), cap), setup.mesh)
      with jax.set_mesh(setup.mesh):
        step = train.make_train_step(setup)
        state, _ = step(state, batch)
        jax.block_until_ready(state)
      runs.append(
        dict(
          impl=impl,
          cap=cap,
          layers=layers,
          setup=setup,
          state=state,
          step=step,
          batch=batch,
          times=[],
        )
      )
  for _ in range(args.steps):  # interleaved, so drift hits every variant alike
    for r in runs:
      with jax.set_mesh(r["setup"].mesh):
        t0 = time.process_time()
        r["state"], _ = r["step"](r["state"], r["batch"])
        jax.block_until_ready(r["state"])
        r["times"].append(time.process_time() - t0)
  L, T = CONFIG.model.num_layers, CONFIG.data.seq_len
  rows = []
  for impl, cap in variants:
    one, two = (float(np.median(r["times"])) for r in runs if r["impl"] == impl and r["cap"] == cap)
    per_layer = two - one
    step_s = (one - per_layer + L * per_layer) / args.rows  # one row of the 32-layer model
    f = fills[None if impl == "dense" else cap]
    m = model_config(impl, cap, L, 1).model
    cfg = ModelConfig.from_config(m)
    rows.append(
      dict(
        impl=impl,
        cap=None if impl == "dense" else cap,
        fill=f["fill"],
        docs_per_row=f["docs_per_row"],
        step_s_per_row=step_s,
        layer_s_per_row=per_layer / args.rows,
        step_s_1_layer=one,
        step_s_2_layers=two,
        tokens_per_s=f["fill"] * T / step_s,
        executed_gflop_per_token=flops.train_flops_per_token(cfg, T) / 1e9,
      )
    )
  dense = rows[0]["tokens_per_s"]
  for r in rows:
    r["tokens_per_s_vs_dense"] = r["tokens_per_s"] / dense
  header = (
    f"{'impl':>7}{'cap':>5}{'fill':>7}{'docs/row':>10}{'GFLOP/tok':>11}"
    f"{'CPU s/row, 32 L':>17}{'tok/s':>9}{'vs dense':>10}"
  )
  print(
    f"articles: {len(docs):,}, median {np.median(lengths):,.0f} chars, mean "
    f"{lengths.mean():,.0f}; uncapped fill {fills[None]['fill']:.3f}"
  )
  print(header)
  print("-" * len(header))
  for r in rows:
    print(
      f"{r['impl']:>7}{r['cap'] or '-':>5}{r['fill']:>7.3f}{r['docs_per_row']:>10.2f}"
      f"{r['executed_gflop_per_token']:>11.2f}{r['step_s_per_row']:>17.2f}"
      f"{r['tokens_per_s']:>9.0f}{r['tokens_per_s_vs_dense']:>10.2f}"
    )
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(
    json.dumps(
      {
        "device": jax.devices()[0].device_kind,
        "argv": sys.argv[1:],
        "steps": args.steps,
        "articles": len(docs),
        "median_chars": float(np.median(lengths)),
        "mean_chars": float(lengths.mean()),
        "fills": {str(k): v for k, v in fills.items()},
        "rows": rows,
      },
      indent=1,
    )
  )
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
