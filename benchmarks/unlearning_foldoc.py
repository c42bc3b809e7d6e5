"""Unlearning on real text: FOLDOC entries, each its own source, and a slice of a play.

The corpus is a subset of FOLDOC's 7,785 entries: half of it drawn from groups of
entries that state a common fact (cloze.shared_facts), so that shared facts are
asked often enough to measure, the other half drawn at random; a few more entries
are held out from all training (capability: held-out loss). One Shakespeare
slice, under 1% of the characters, is one more source (the book at a realistic
share). Trains, side by side, a NULL on everything, an oracle NULL retrained
without the forgotten entries and the book, and a plain transformer of the same
width; then writes two reports: the forgotten entries (every fact kind,
post-hoc baselines, relearning) to --out, and the book alone (relearning
against the oracle, verbatim extraction, ACR) to --out/book.

  python benchmarks/unlearning_foldoc.py [--entries 160] [--forget 50] [--epochs 20]

The defaults are a subset small enough for a loaded two-core CPU (d 64, two
layers, 160 entries). The full-scale setting, --entries 2000 --d_model 96
--num_layers 4 --epochs 30, is about an hour on an idle two-core machine (an
estimate from the measured step time); the results record their setting.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from nullearn import evaluate, inference, jobs, report
from nullearn.configs import tiny
from nullearn.data import cloze, records, wikitext
from nullearn.data import tokenizer as tokenizer_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--data", default=str(DATA))
  p.add_argument("--runs", default="runs/foldoc", help="the three runs (checkpoints, logs)")
  p.add_argument("--out", default="benchmarks/results/foldoc", help="the reports")
  p.add_argument("--entries", type=int, default=160, help="training entries")
  p.add_argument(
    "--linked",
    type=float,
    default=0.5,
    help="share of the entries drawn from groups stating a common fact",
  )
  p.add_argument("--forget", type=int, default=50, help="random training entries forgotten")
  p.add_argument("--heldout", type=int, default=20, help="entries no model trains on")
  p.add_argument("--book_share", type=float, default=0.01, help="the book's share of characters")
  p.add_argument("--epochs", type=float, default=20.0)
  p.add_argument("--warmup", type=int, default=100, help="learning-rate warmup steps")
  p.add_argument(
    "--plain",
    action=argparse.BooleanOptionalAction,
    default=True,
    help="also train the plain transformer (the baselines' model)",
  )
  p.add_argument("--vocab", type=int, default=2048)
  p.add_argument("--d_model", type=int, default=64)
  p.add_argument("--num_layers", type=int, default=2)
  p.add_argument("--backbone", type=int, default=16)
  p.add_argument("--pool", type=int, default=1024)
  p.add_argument("--active", type=int, default=32)
  p.add_argument("--per_layer_masks", action="store_true")
  p.add_argument(
    "--sections",
    default="baselines,relearning",
    help="report sections for the forgotten entries (the conditions always)",
  )
  p.add_argument(
    "--book_sections", default="relearning,extraction", help="report sections for the book"
  )
  p.add_argument("--reports", default="entries,book", help="which reports to write")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--quick", action="store_true", help="a minutes-long smoke run, not a result")
  return p.parse_args(argv)


def choose_entries(docs: list[records.Document], n: int, linked: float, seed: int) -> list[int]:
  """n entry ids: groups stating a common fact (whole groups, random order) up to
  linked * n, then random other entries."""
  rng = np.random.default_rng(seed)
  groups = sorted(sorted(g) for g in cloze.shared_facts(docs).values() if len(g) <= 4)
  chosen: list[int] = []
  for i in rng.permutation(len(groups)):
    if len(chosen) >= linked * n:
      break
    chosen += [s for s in groups[i] if s not in chosen]
  rest = sorted({d.source_id for d in docs} - set(chosen))
  chosen += rng.choice(rest, n - len(chosen), replace=False).tolist()
  return sorted(int(s) for s in chosen)


def book_slice(path: pathlib.Path, source_id: int, max_chars: int) -> list[records.Document]:
  """The play's first chunks, whole lines, at most max_chars in all."""
  out, total = [], 0
  for d in wikitext.book_documents(path, source_id, "Shakespeare (a slice)", chunk_chars=400):
    if total + len(d.text) > max_chars:
      break
    out.append(d)
    total += len(d.text)
  return out


def corpus(args):
  """Training documents, held-out documents, probes, forgotten entries and the book's id."""
  all_docs = records.read_documents(pathlib.Path(args.data) / "foldoc" / "documents.jsonl")
  ids = choose_entries(all_docs, args.entries + args.heldout, args.linked, args.seed)
  rng = np.random.default_rng(args.seed + 1)
  heldout = set(rng.choice(ids, args.heldout, replace=False).tolist())
  train_ids = [i for i in ids if i not in heldout]
  forget = sorted(rng.choice(train_ids, args.forget, replace=False).tolist())
  by_id = {d.source_id: d for d in all_docs}
  entries = [by_id[i] for i in train_ids]
  book_id = max(by_id) + 1
  chars = sum(len(d.text) for d in entries)
  book = book_slice(
    pathlib.Path(args.data) / "tinyshakespeare" / "input.txt", book_id, int(args.book_share * chars)
  )
  train_docs = entries + book
  probes = [
    p
    for p in cloze.make_probes(train_docs, per_source=8, shared_per_source=2, seed=args.seed)
    if p.source_id != book_id
  ]
  # A slice of dialogue names few people after six words of a line: its probes may be shorter.
  probes += [
    p
    for p in cloze.make_probes(train_docs, per_source=16, min_prompt_words=3, seed=args.seed)
    if p.source_id == book_id
  ]
  return train_docs, [by_id[i] for i in sorted(heldout)], probes, forget, book_id


def train_config(args):
  c = tiny.get_config()
  c.model.update(
    dict(
      vocab_size=args.vocab,
      d_model=args.d_model,
      num_layers=args.num_layers,
      head_dim=args.d_model // c.model.num_heads,
      backbone=args.backbone,
      pool=args.pool,
      active=args.active,
      per_layer_masks=args.per_layer_masks,
    )
  )
  c.train.update(
    dict(epochs=args.epochs, warmup_steps=args.warmup, log_every=40, checkpoint_every=1000)
  )
  if args.quick:
    c.train.update(dict(steps=20, epochs=0.0))
  return c


def eval_config(args, sections):
  e = tiny.get_config().eval
  e.update(
    dict(
      seed=args.seed,
      sections=sections,
      unlearn_methods=("ga", "npo"),
      unlearn_steps=30,
      unlearn_lr=1e-3,
      unlearn_batch=16,
      relearn_lr=1e-3,
      relearn_batch=16,
      relearn_steps=(1, 2, 5, 10, 20),
      retain_docs=40,
      max_retained_probes=300,
      extraction_prefix=16,
      extraction_continuation=32,
      extraction_samples=32,
      acr_targets=2,
      acr_target_len=12,
      gcg_steps=60,
      gcg_top_k=32,
      gcg_batch=32,
    )
  )
  if args.quick:
    e.update(
      dict(
        unlearn_steps=2,
        relearn_steps=(1,),
        extraction_samples=2,
        acr_targets=1,
        acr_target_len=4,
        gcg_steps=2,
        gcg_top_k=8,
        gcg_batch=8,
        retain_docs=4,
        max_retained_probes=20,
        unlearn_methods=("npo",),
      )
    )
  return e


def main():
  args = parse_args()
  t0 = time.time()
  out, runs = pathlib.Path(args.out), pathlib.Path(args.runs)
  runs.mkdir(parents=True, exist_ok=True)
  train_docs, heldout_docs, probes, forget, book_id = corpus(args)
  chars = {s: 0 for s in (True, False)}
  for d in train_docs:
    chars[d.source_id == book_id] += len(d.text)
  kinds = {
    k: sum(p.kind == k for p in probes if p.source_id in set(forget)) for k in ("unique", "shared")
  }
  print(
    f"{len({d.source_id for d in train_docs})} training sources, {len(heldout_docs)} held-out "
    f"entries, {len(probes)} probes; forgetting {len(forget)} entries ({kinds}) and the book "
    f"({chars[True] / sum(chars.values()):.2%} of the characters)"
  )
  config = train_config(args)
  tokenizer = tokenizer_lib.for_run(
    runs, (d.text for d in train_docs), config.tokenizer, config.model.vocab_size
  )
  jobs.run_all(
    jobs.comparison(config, runs, train_docs, [*forget, book_id], plain=args.plain), tokenizer
  )
  t_train = time.time() - t0
  models = evaluate.Models(
    *(inference.load_run(runs / n) for n in ("null", "oracle", *(("plain",) if args.plain else ())))
  )
  setting = {
    "entries": args.entries,
    "linked": args.linked,
    "forgotten": len(forget),
    "epochs": args.epochs,
    "warmup": args.warmup,
    "geometry": models.null.model_cfg.geometry.to_dict(),
    "d_model": args.d_model,
    "num_layers": args.num_layers,
    "train_minutes": t_train / 60,
    "quick": args.quick,
    "book_source": book_id,
    "book_share": chars[True] / sum(chars.values()),
  }
  for name, forgotten, sections, where in (
    ("entries", forget, args.sections, out),
    ("book", [book_id], args.book_sections, out / "book"),
  ):
    if name not in args.reports.split(","):
      continue
    sections = tuple(s for s in sections.split(",") if s)
    t1 = time.time()
    result = evaluate.evaluate(
      models,
      train_docs,
      probes,
      forgotten,
      eval_config(args, sections),
      heldout=heldout_docs if name == "entries" else (),
    )
    result.benchmark = {
      **setting,
      "eval_minutes": (time.time() - t1) / 60,
      "total_minutes": (time.time() - t0) / 60,
    }
    for path in report.write(result, where):
      print(f"wrote {path}")
    print((where / "report.md").read_text())
  print(json.dumps(setting))


if __name__ == "__main__":
  main()
