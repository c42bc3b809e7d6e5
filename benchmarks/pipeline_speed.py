"""Input pipeline tokens/s per host against what the 1B run consumes per host.

The training pipeline (read, tokenize, pack, batch: nullearn/data/pipeline.py
on Grain) over synthetic articles with Wikipedia's lengths, tokenized by a
49,152-piece SentencePiece model (trained here on the synthetic text unless
--tokenizer gives one), in one process and with Grain worker processes. The
need: configs/1b.py on its v4-128 (64 chips, 4 a host: 16 hosts) at 50% MFU of
the FLOPs its step executes (flops.py and the chip table), per host.

Wall-clock tokens/s is what this machine gave; tokens per CPU second (this
process's threads and its reaped worker processes) is the rate per busy core,
which a machine shared with other work does not hide: a host with `c` free
cores can reach about `c` times it with `c` workers.

  python benchmarks/pipeline_speed.py [--tokenizer FILE] [--articles 20000] [--workers 0,2]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import pathlib
import resource
import sys
import time

from absl import flags
from batches import wikipedia_like

from nullearn import flops
from nullearn.data import pipeline
from nullearn.data.tokenizer import Tokenizer, train_tokenizer
from nullearn.model import ModelConfig

CHIPS_PER_HOST = 4  # a TPU v4 host drives 4 chips
TARGET_MFU = 0.5


def parse_args():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--tokenizer", default="", help="a SentencePiece model (default: train one)")
  p.add_argument(
    "--tokenizer_articles",
    type=int,
    default=5000,
    help="articles the tokenizer is trained on when none is given",
  )
  p.add_argument("--save_tokenizer", default="", help="where to write a trained tokenizer")
  p.add_argument("--articles", type=int, default=5000)
  p.add_argument("--workers", default="0,2")
  p.add_argument("--out", default="benchmarks/results/pipeline_speed.json")
  return p.parse_args()


def need_per_host(config) -> dict:
  cfg = ModelConfig.from_config(config.model)
  chip = flops.chip(config.mesh.chip)
  executed = flops.train_flops_per_token(cfg, config.data.seq_len)
  total = TARGET_MFU * chip.peak_flops * config.mesh.num_devices / executed
  hosts = config.mesh.num_devices // CHIPS_PER_HOST
  return dict(
    chip=chip.name,
    devices=config.mesh.num_devices,
    hosts=hosts,
    executed_flops_per_token=executed,
    tokens_per_s=total / hosts,
    rows_per_host=config.data.batch_size // hosts,
  )


def tokenize_rate(tokenizer: Tokenizer, texts: list[str]) -> dict:
  """One process: documents one at a time, and as one list to SentencePiece."""
  t0 = time.perf_counter()
  tokens = sum(len(tokenizer.encode_document(t)) for t in texts)
  one = time.perf_counter() - t0
  t0 = time.perf_counter()
  listed = sum(len(x) + 2 for x in tokenizer.encode_batch(texts))
  batched = time.perf_counter() - t0
  assert listed == tokens
  chars = sum(map(len, texts))
  return dict(
    docs=len(texts),
    chars=chars,
    tokens=tokens,
    chars_per_token=chars / tokens,
    one_at_a_time_tokens_per_s=tokens / one,
    list_tokens_per_s=tokens / batched,
  )


def pipeline_rate(docs, tokenizer, config, rows: int, workers: int) -> dict:
  """One pass over `docs`, start-up included: Grain reads ahead in threads (and worker
  processes), so a few timed batches would only measure its buffer."""
  ds = pipeline.training_dataset(
    docs,
    tokenizer,
    seq_len=config.data.seq_len,
    batch_size=rows,
    seed=0,
    num_epochs=1,
    packing_bins=config.data.packing_bins,
    worker_count=workers,
    max_segments=config.model.max_segments if config.model.sink_impl == "gather" else None,
  )
  real = batches = 0
  t0, cpu0 = time.perf_counter(), _cpu_seconds()
  it = iter(ds)
  for batch in it:
    real += int((batch["segment_ids"] > 0).sum())
    batches += 1
  seconds = time.perf_counter() - t0
  del it, batch
  gc.collect()  # worker processes exit and are reaped: their CPU time is counted
  cpu = _cpu_seconds() - cpu0
  tokens = batches * rows * config.data.seq_len
  return dict(
    workers=workers,
    seconds=seconds,
    cpu_seconds=cpu,
    batches=batches,
    tokens_per_s=tokens / seconds,
    tokens_per_cpu_s=tokens / cpu,
    fill=real / tokens,
  )


def _cpu_seconds() -> float:
  """CPU time of this process (all threads) and its reaped children (Grain's workers)."""
  own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main():
  args = parse_args()
  flags.FLAGS.mark_as_parsed()  # Grain's worker processes read absl flags
  config = importlib.import_module("nullearn.configs.1b").get_config()
  need = need_per_host(config)
  out = {"argv": sys.argv[1:], "need": need}
  if args.tokenizer:
    tokenizer = Tokenizer.load(args.tokenizer)
  else:
    texts = [d.text for d in wikipedia_like(args.tokenizer_articles, seed=1)]
    t0 = time.perf_counter()
    tokenizer = train_tokenizer(texts, config.model.vocab_size)
    out["tokenizer_training"] = dict(
      articles=len(texts), chars=sum(map(len, texts)), seconds=time.perf_counter() - t0
    )
    if args.save_tokenizer:
      tokenizer.save(args.save_tokenizer)
  out["vocab_size"] = tokenizer.vocab_size
  docs = wikipedia_like(args.articles)
  out["tokenize"] = tokenize_rate(tokenizer, [d.text for d in docs[:2000]])
  out["runs"] = [
    pipeline_rate(docs, tokenizer, config, need["rows_per_host"], w)
    for w in (int(w) for w in args.workers.split(","))
  ]
  for r in out["runs"]:
    r["ratio_to_need"] = r["tokens_per_s"] / need["tokens_per_s"]
    r["cpu_ratio_to_need"] = r["tokens_per_cpu_s"] / need["tokens_per_s"]  # per busy core
  t = out["tokenize"]
  print(
    f"need per host: {need['tokens_per_s']:,.0f} tokens/s ({need['devices']} x {need['chip']}"
    f", {need['hosts']} hosts, {TARGET_MFU:.0%} MFU of "
    f"{need['executed_flops_per_token'] / 1e9:.2f} GFLOP/token, "
    f"{need['rows_per_host']} rows a step per host)"
  )
  print(
    f"tokenizer: {out['vocab_size']:,} pieces, {t['chars_per_token']:.2f} chars/token; "
    f"encode one document at a time {t['one_at_a_time_tokens_per_s']:,.0f} tokens/s, "
    f"as a list {t['list_tokens_per_s']:,.0f} tokens/s"
  )
  if "tokenizer_training" in out:
    tt = out["tokenizer_training"]
    print(
      f"tokenizer training: {tt['articles']:,} articles ({tt['chars'] / 1e6:.1f}M chars) "
      f"in {tt['seconds']:.0f} s"
    )
  header = (
    f"{'workers':>8}{'batches':>9}{'wall s':>8}{'tokens/s':>11}{'x need':>8}"
    f"{'CPU s':>7}{'tokens/CPU s':>14}{'x need':>8}{'fill':>7}"
  )
  print(header)
  print("-" * len(header))
  for r in out["runs"]:
    print(
      f"{r['workers']:>8}{r['batches']:>9}{r['seconds']:>8.1f}{r['tokens_per_s']:>11,.0f}"
      f"{r['ratio_to_need']:>8.2f}{r['cpu_seconds']:>7.1f}{r['tokens_per_cpu_s']:>14,.0f}"
      f"{r['cpu_ratio_to_need']:>8.2f}{r['fill']:>7.3f}"
    )
  path = pathlib.Path(args.out)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(out, indent=1))
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
