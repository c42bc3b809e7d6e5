"""Peak memory of scoring probes: bounded by tokens a batch, whatever the prompts.

Scores 1,000 probes with 200-word prompts on a tiny NULL, each way in its own
process so peak RSS is its own, on two probe sets: plain words, and the same with
one prompt in a hundred in rare characters (byte fallback makes those thousands
of tokens):

  bounded   inference.option_nll: prompts cut from the left to the model's context,
            rows bucketed by length, batches of at most `max_tokens` tokens
  padded    the previous way: every row padded to the longest one, 256 rows a batch,
            prompts never cut. Run on the plain set only: with one rare-character
            prompt its rows are ~2,600 tokens and one batch's attention alone is
            256 x 4 x 2,600^2 floats (27 GB); tried once, the kernel killed it at
            17.6 GB resident.

  python benchmarks/eval_memory.py [--probes 1000] [--words 200]

Writes benchmarks/results/eval_memory.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import resource
import subprocess
import sys
import time

RESULTS = pathlib.Path(__file__).parent / "results"


def make_probes(n: int, words: int, rare: bool, seed: int = 0):
  from nullearn.data.records import Probe

  rng = random.Random(seed)
  vocab = [f"w{rng.randrange(5000)}" for _ in range(2000)]
  odd = "ᚠᛇᚻ᛫ᛒᛦᚦ ⠊⠀⠉⠁⠝ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꧁꧂ ∮ ℵ₀ 𓀀𓁐"
  probes = []
  for i in range(n):
    body = [rng.choice(vocab) for _ in range(words)]
    if rare and i % 100 == 0:  # a prompt of rare characters: thousands of byte tokens
      body = [odd] * (words // 8)
    probes.append(
      Probe(
        i % 50,
        " ".join(body) + " and then",
        "alpha",
        ("beta", "gamma", "delta", "epsilon"),
        "unique",
      )
    )
  return probes


def child(mode: str, n: int, words: int, rare: bool) -> dict:
  """Runs in its own process: one way of scoring, its seconds and peak RSS."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from nullearn import inference, losses
  from nullearn.configs import tiny
  from nullearn.data import factworld
  from nullearn.data.tokenizer import train_tokenizer
  from nullearn.model import ModelConfig, Transformer
  from nullearn.switch import Switch

  config = tiny.get_config()
  world = factworld.generate(factworld.FactWorldConfig(num_sources=100, sources_per_group=10))
  tok = train_tokenizer([d.text for d in world.documents], config.model.vocab_size)
  cfg = ModelConfig.from_config(config.model)
  graphdef, params = nnx.split(Transformer(cfg, nnx.Rngs(0)))
  run = inference.Run(cfg, graphdef, params, tok, {"config": json.loads(config.to_json())})
  probes = make_probes(n, words, rare)
  switch_for = lambda idx: Switch.sources(np.full((len(idx), 1), 3))
  t0 = time.time()
  if mode == "bounded":
    nll = inference.option_nll(run, probes, switch_for)
  else:
    rows, starts = [], []
    for p in probes:
      prompt = tok.encode_document(p.prompt)[:-1]
      for option in (p.answer, *p.distractors):
        rows.append(np.concatenate([prompt, tok.encode(option)]).astype(np.int32))
        starts.append(len(prompt))
    width = max(len(r) for r in rows)
    tokens = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
      tokens[i, : len(r)] = r
    lengths, starts = np.asarray([len(r) for r in rows]), np.asarray(starts)

    @jax.jit
    def score(tokens_BxL, starts_B, lengths_B):
      inputs, targets = tokens_BxL[:, :-1], tokens_BxL[:, 1:]
      pos = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
      w = ((pos + 1 >= starts_B[:, None]) & (pos + 1 < lengths_B[:, None])).astype(jnp.float32)
      logits = nnx.merge(graphdef, params)(
        inputs,
        (inputs > 0).astype(jnp.int32),
        pos,
        Switch.sources(jnp.full((inputs.shape[0], 1), 3)),
      )
      return losses.sequence_nll(logits, targets, w) / jnp.maximum(w.sum(-1), 1.0)

    out = []
    for s in range(0, len(rows), 256):
      idx = np.minimum(np.arange(s, s + 256), len(rows) - 1)
      out.append(np.asarray(score(tokens[idx], starts[idx], lengths[idx])))
    nll = np.concatenate(out)
  seconds = time.time() - t0
  peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  del nll
  return {
    "mode": mode,
    "probes": "rare" if rare else "plain",
    "seconds": seconds,
    "peak_rss_mib": peak_mib,
  }


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--probes", type=int, default=1000)
  p.add_argument("--words", type=int, default=200)
  p.add_argument("--child", default="")
  p.add_argument("--rare", action="store_true")
  args = p.parse_args()
  if args.child:
    print(json.dumps(child(args.child, args.probes, args.words, args.rare)))
    return
  rows = []
  for mode, rare in (("bounded", False), ("padded", False), ("bounded", True)):
    out = subprocess.run(
      [
        sys.executable,
        __file__,
        f"--child={mode}",
        f"--probes={args.probes}",
        f"--words={args.words}",
        *(["--rare"] if rare else []),
      ],
      capture_output=True,
      text=True,
      check=False,
    )
    if out.returncode:
      why = (
        f"killed by signal {-out.returncode} (out of memory)"
        if out.returncode < 0
        else (out.stderr.strip().splitlines() or ["no output"])[-1]
      )
      rows.append(
        {
          "mode": mode,
          "probes": "rare" if rare else "plain",
          "failed": why,
          "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        }
      )
    else:
      rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
  print(
    f"{args.probes} probes of {args.words}-word prompts, 4 distractors each, tiny NULL "
    "(context 128); rare: 1 prompt in 100 in rare characters"
  )
  print(f"{'mode':<10}{'probes':<8}{'seconds':>10}{'peak RSS MiB':>15}")
  for r in rows:
    head = f"{r['mode']:<10}{r['probes']:<8}"
    if "failed" in r:
      print(f"{head}  failed after {r['peak_rss_mib']:,.0f} MiB: {r['failed']}")
    else:
      print(f"{head}{r['seconds']:>10.1f}{r['peak_rss_mib']:>15.0f}")
  RESULTS.mkdir(exist_ok=True)
  (RESULTS / "eval_memory.json").write_text(
    json.dumps({"probes": args.probes, "words": args.words, "rows": rows}, indent=1)
  )


if __name__ == "__main__":
  main()
