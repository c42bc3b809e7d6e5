"""Unlearning on real text: WikiText-2 articles and a book, each its own source.

Every WikiText-2 article (valid + test) is a source and Shakespeare's plays are
one more (the "book", cut into many documents). A few articles are held out
from all training (capability: held-out loss). Trains, side by side on the
CPU, a NULL on everything else, a plain transformer of the same width on the
same data, and an oracle NULL without the forgotten sources (the book and some
articles); then writes the full evaluation report: Truth Ratios per fact kind
and condition, post-hoc baselines, relearning and extraction attacks.

  python benchmarks/unlearning_wikitext.py [--out benchmarks/results/wikitext] [--epochs 6]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from nullearn import evaluate, inference, jobs, report
from nullearn.configs import tiny
from nullearn.data import cloze, wikitext
from nullearn.data import tokenizer as tokenizer_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def parse_args():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
  p.add_argument("--runs", default="runs/wikitext", help="the three runs (checkpoints, logs)")
  p.add_argument("--out", default="benchmarks/results/wikitext", help="the report")
  p.add_argument("--epochs", type=float, default=6.0)
  p.add_argument("--forget_articles", type=int, default=8)
  p.add_argument("--heldout_articles", type=int, default=6)
  p.add_argument("--vocab", type=int, default=4096)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--quick", action="store_true", help="a minutes-long smoke run, not a result")
  return p.parse_args()


def corpus_and_probes(data: pathlib.Path, args):
  articles = wikitext.wikitext_documents(
    [data / "wikitext-2" / "valid.txt", data / "wikitext-2" / "test.txt"]
  )
  book_id = max(d.source_id for d in articles) + 1
  book = wikitext.book_documents(
    data / "tinyshakespeare" / "input.txt", book_id, "Shakespeare's plays"
  )
  rng = np.random.default_rng(args.seed)
  order = rng.permutation(sorted({d.source_id for d in articles}))
  heldout = set(order[: args.heldout_articles].tolist())
  forget = [
    *sorted(order[args.heldout_articles : args.heldout_articles + args.forget_articles].tolist()),
    book_id,
  ]
  train_docs = [d for d in articles + book if d.source_id not in heldout]
  # Cloze probes: 8 per article and 48 from the book (one source with many facts).
  many = cloze.make_probes(train_docs, per_source=48, seed=args.seed)
  per_source: dict[int, int] = {}
  probes = []
  for p in many:
    per_source[p.source_id] = per_source.get(p.source_id, 0) + 1
    if p.source_id == book_id or per_source[p.source_id] <= 8:
      probes.append(p)
  heldout_docs = [d for d in articles if d.source_id in heldout]
  return train_docs, heldout_docs, probes, forget, book_id


def train_config(args):
  c = tiny.get_config()
  c.model.vocab_size = args.vocab
  c.train.epochs = args.epochs
  c.train.log_every = 200
  c.train.checkpoint_every = 400
  if args.quick:
    c.train.update(dict(steps=30, epochs=0.0))
  return c


def eval_config(args):
  e = tiny.get_config().eval
  e.update(
    dict(
      seed=args.seed,
      unlearn_steps=50,
      unlearn_lr=1e-3,
      unlearn_batch=16,
      relearn_lr=1e-3,
      relearn_batch=16,
      retain_docs=40,
      extraction_samples=64,
      acr_targets=4,
      acr_target_len=16,
      gcg_steps=100,
    )
  )
  if args.quick:
    e.update(
      dict(
        unlearn_steps=3,
        relearn_steps=(1, 2),
        extraction_samples=4,
        acr_targets=1,
        acr_target_len=6,
        gcg_steps=3,
        gcg_top_k=8,
        gcg_batch=8,
        retain_docs=4,
        max_retained_probes=20,
      )
    )
  return e


def main():
  args = parse_args()
  t0 = time.time()
  out, runs = pathlib.Path(args.out), pathlib.Path(args.runs)
  runs.mkdir(parents=True, exist_ok=True)
  train_docs, heldout_docs, probes, forget, book_id = corpus_and_probes(
    pathlib.Path(args.data), args
  )
  print(
    f"{len({d.source_id for d in train_docs})} training sources ({len(train_docs)} documents), "
    f"{len(heldout_docs)} held-out articles, {len(probes)} probes; forgetting {forget} "
    f"(the book is {book_id})"
  )
  config = train_config(args)
  tokenizer = tokenizer_lib.for_run(
    runs, (d.text for d in train_docs), config.tokenizer, config.model.vocab_size
  )
  jobs.run_all(jobs.comparison(config, runs, train_docs, forget, plain=True), tokenizer)
  t_train = time.time() - t0
  models = evaluate.Models(*(inference.load_run(runs / n) for n in ("null", "oracle", "plain")))
  result = evaluate.evaluate(
    models, train_docs, probes, forget, eval_config(args), heldout=heldout_docs
  )
  result.benchmark = {
    "train_minutes": t_train / 60,
    "total_minutes": (time.time() - t0) / 60,
    "book_source": book_id,
    "epochs": args.epochs,
    "quick": args.quick,
  }
  for path in report.write(result, out):
    print(f"wrote {path}")
  print((out / "report.md").read_text())
  print(json.dumps(result.benchmark))


if __name__ == "__main__":
  main()
