"""`nullearn <command>`: demo, train, tokenizer train, factworld.

Configs are ml-collections files (`--config=configs/tiny.py[:variant]`) with
overrides as `--config.model.d_model=128`.
"""

from __future__ import annotations

import os
import pathlib
import sys

from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

import nullearn.configs

_CONFIGS = pathlib.Path(nullearn.configs.__file__).parent
_CONFIG = config_flags.DEFINE_config_file(
    "config", str(_CONFIGS / "tiny.py"), "Run config: a configs/*.py file, optionally :variant.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, tokenizer.")
_TOKENIZER = flags.DEFINE_string(
    "tokenizer", None, "An existing tokenizer.model to use instead of training one.")
_OUT = flags.DEFINE_string("out", None, "Output directory (factworld).")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "train: print the plan on the config's mesh (parameters, bytes per "
    "device, FLOPs, expected tokens/s) without allocating the model.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize (on TPU VMs it finds its peers).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of JAX processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_ORACLE = flags.DEFINE_string("oracle", None, "eval: workdir of a model retrained without "
                              "the forgotten sources.")
_PLAIN = flags.DEFINE_string("plain", None, "eval: workdir of a plain transformer trained on "
                             "the same data.")
_FORGET = flags.DEFINE_list("forget", None, "eval: sources to forget, ids or names "
                            "(default: --config.eval.forget).")
_CORPUS = flags.DEFINE_string("corpus", None, "eval: documents .jsonl (default: the corpus "
                              "the checkpoint was trained on).")
_FORCE = flags.DEFINE_bool("force", False, "eval: compare with an oracle or plain model that "
                           "fails validation (the report says so).")
_PROBES = flags.DEFINE_string("probes", None, "eval: probes .jsonl (default: the corpus's own, "
                              "or cloze probes built from the text).")
_PARQUET = flags.DEFINE_string("parquet", None, "prepare: the dump's parquet files, a directory "
                               "or a glob (default: download them into --out/downloads).")
_PARQUET_URL = flags.DEFINE_string("parquet_url", None, "prepare: where to download the parquet "
                                   "shards from (default: Hugging Face).")
_WORKERS = flags.DEFINE_integer("workers", None, "prepare: processes converting shards "
                                "(default: one per CPU).")

USAGE = """usage: nullearn <command> [flags]

commands:
  demo              train a NULL and an oracle on the embedded fact world, switch sources off
  train             train (or resume) a run: --config=... --workdir=...
  eval              unlearning report: --workdir=NULL [--oracle=DIR --plain=DIR] --forget=...
                    --out=DIR
  tokenizer train   train the run's SentencePiece model: --config=... --workdir=...
  titles            build the title -> id index of a TFDS corpus: --config=... --out=DIR
  prepare wikipedia download and convert English Wikipedia into a TFDS dataset:
                    --out=TFDS_DATA_DIR [--parquet=DIR_OR_GLOB] [--workers=N]
  factworld         write the fact world as documents.jsonl and probes.jsonl: --out=DIR
  capability        zero-shot ARC-Easy, Winogrande, PIQA, SciQ: [TASK ...] --workdir=NULL
                    [--plain=DIR] --out=DIR; `capability prepare TASK [DIR]` into TFDS_DATA_DIR
"""


def _workdir(default: str | None = None) -> epath.Path:
  """The run directory, local or gs://."""
  value = _WORKDIR.value or default
  if not value:
    raise app.UsageError("--workdir is required")
  return epath.Path(value)


def _out(what: str) -> str:
  if not _OUT.value:
    raise app.UsageError(f"--out is required ({what})")
  return _OUT.value


def _run_tokenizer(config, workdir, corpus):
  """The run's tokenizer; trained and written by process 0 only, then read by all."""
  import jax
  from jax.experimental import multihost_utils

  from nullearn.data import corpus as corpus_lib
  from nullearn.data import tokenizer as tokenizer_lib
  if jax.process_index() == 0:
    tokenizer_lib.for_run(workdir, corpus_lib.tokenizer_texts(corpus, config), config.tokenizer,
                          config.model.vocab_size, given=_TOKENIZER.value)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("nullearn tokenizer")
  return tokenizer_lib.Tokenizer.load(workdir / "tokenizer.model")


def demo_main(argv):
  del argv
  from nullearn import demo
  demo.run(_CONFIG.value, _workdir("demo_out"))


def train_main(argv):
  del argv
  if _DRY_RUN.value:
    from nullearn import dryrun
    print(dryrun.format_plan(dryrun.plan(_CONFIG.value)))
    return
  if _MULTIHOST.value:
    from nullearn import distributed
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from nullearn import train
  from nullearn.data import corpus as corpus_lib
  config, workdir = _CONFIG.value, _workdir()
  train.check_config(config)
  workdir.mkdir(parents=True, exist_ok=True)
  corpus = corpus_lib.load(config)
  tokenizer = _run_tokenizer(config, workdir, corpus)
  train.train(config, workdir, corpus, tokenizer)


def tokenizer_main(argv):
  if argv[1:] != ["train"]:
    raise app.UsageError("usage: nullearn tokenizer train --config=... --workdir=...")
  from nullearn.data import corpus as corpus_lib
  config, workdir = _CONFIG.value, _workdir()
  workdir.mkdir(parents=True, exist_ok=True)
  if (workdir / "tokenizer.model").exists():
    raise app.UsageError(f"{workdir}/tokenizer.model exists; remove it to train a new one")
  tok = _run_tokenizer(config, workdir, corpus_lib.load(config))
  print(f"wrote {workdir / 'tokenizer.model'} ({tok.vocab_size} pieces)")


def titles_main(argv):
  del argv
  from nullearn.data import corpus as corpus_lib
  from nullearn.data import source_index
  out = _out("a local directory for the index")
  corpus = corpus_lib.load(_CONFIG.value)
  if corpus.in_memory:
    raise app.UsageError("this corpus is in memory: names resolve without an index")
  index = source_index.SourceIndex.build(corpus.documents, out)
  print(f"wrote a title index of {len(index)} sources to {out}; "
        f"use --config.data.title_index={out}")


def eval_main(argv):
  del argv
  import ml_collections

  from nullearn import evaluate, inference, report
  from nullearn.data import corpus as corpus_lib
  out = _out("the report directory")
  config = _CONFIG.value
  null = inference.load_run(_workdir())
  models = evaluate.Models(
      null, oracle=inference.load_run(_ORACLE.value) if _ORACLE.value else None,
      plain=inference.load_run(_PLAIN.value) if _PLAIN.value else None)
  run_config = ml_collections.ConfigDict(null.meta["config"])
  if _CORPUS.value:
    run_config.data.corpus = _CORPUS.value
  if _PROBES.value:
    run_config.data.probes = _PROBES.value
  if os.environ.get("TFDS_DATA_DIR"):  # where this machine keeps the prepared dataset
    run_config.data.tfds_data_dir = os.environ["TFDS_DATA_DIR"]
  corpus = corpus_lib.load(run_config)
  forget = corpus_lib.resolve_sources(corpus, _FORGET.value or config.eval.forget)
  problems = evaluate.validate(models, forget)
  if problems and not _FORCE.value:
    raise evaluate.ModelMismatchError(f"{problems[0]} (--force compares anyway; the report "
                                      "then says so)")
  docs, heldout = corpus_lib.evaluation_documents(
      corpus, forget, null.meta.get("data", {}).get("heldout", ()),
      retained=config.eval.retained_sources, seed=config.eval.seed)
  result = evaluate.evaluate(models, docs, corpus.probes, forget, config.eval, heldout=heldout,
                             forced=problems)
  for path in report.write(result, out):
    print(f"wrote {path}")
  print((epath.Path(out) / "report.md").read_text())


def prepare_main(argv):
  if argv[1:] != ["wikipedia"]:
    raise app.UsageError("usage: nullearn prepare wikipedia --out=TFDS_DATA_DIR "
                         "[--parquet=DIR_OR_GLOB] [--workers=N]")
  from nullearn.data import prepare
  out = _out("the TFDS data directory")
  done = prepare.prepare_wikipedia(out, parquet=_PARQUET.value, workers=_WORKERS.value,
                                   parquet_url=_PARQUET_URL.value or prepare.PARQUET_URL)
  what = "already prepared" if done.reused else f"prepared in {done.seconds:.0f} s"
  print(f"{done.path}: {done.articles:,} articles, {done.num_bytes / 2**30:.2f} GiB, {what}.\n"
        f"Train with TFDS_DATA_DIR={out} --config.data.corpus=tfds:{prepare.NAME}/{prepare.CONFIG}")


def capability_main(argv):
  from nullearn import capability
  capability.capability_main(argv)


def factworld_main(argv):
  del argv
  from nullearn.data import factworld, records
  out = pathlib.Path(_out("where to write the files"))
  out.mkdir(parents=True, exist_ok=True)
  world = factworld.generate(factworld.FactWorldConfig.from_config(_CONFIG.value))
  records.write_documents(out / "documents.jsonl", world.documents)
  records.write_probes(out / "probes.jsonl", world.probes)
  print(f"wrote {len(world.documents)} documents and {len(world.probes)} probes to {out}")


COMMANDS = {"demo": demo_main, "train": train_main, "eval": eval_main,
            "tokenizer": tokenizer_main, "titles": titles_main, "prepare": prepare_main,
            "factworld": factworld_main, "capability": capability_main}


def main(argv: list[str] | None = None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] not in COMMANDS:
    print(USAGE, file=sys.stderr)
    sys.exit(0 if len(argv) > 1 and argv[1] in ("-h", "--help", "help") else 2)
  command = argv.pop(1)

  def run(args):
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save and restore at INFO
    try:
      COMMANDS[command](args)
    except (app.UsageError, ValueError, OSError, KeyError) as e:
      # Bad input: one line naming the field or file, no traceback (NULLEARN_TRACEBACK=1
      # shows it). Any other exception is a bug and keeps its traceback.
      if os.environ.get("NULLEARN_TRACEBACK"):
        raise
      message = " ".join(str(e).split()) or type(e).__name__
      print(f"nullearn {command}: error: {message}", file=sys.stderr)
      sys.exit(2)
  app.run(run, argv=argv)


if __name__ == "__main__":
  main()
