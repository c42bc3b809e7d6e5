"""`nullearn <command>`: demo, train, tokenizer train, factworld.

Configs are ml-collections files (`--config=configs/tiny.py[:variant]`) with
overrides as `--config.model.d_model=128`.
"""

from __future__ import annotations

import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

import nullearn.configs

_CONFIGS = pathlib.Path(nullearn.configs.__file__).parent
_CONFIG = config_flags.DEFINE_config_file(
    "config", str(_CONFIGS / "tiny.py"), "Run config: a configs/*.py file, optionally :variant.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, tokenizer.")
_TOKENIZER = flags.DEFINE_string(
    "tokenizer", None, "An existing tokenizer.model to use instead of training one.")
_OUT = flags.DEFINE_string("out", None, "Output directory (factworld).")

USAGE = """usage: nullearn <command> [flags]

commands:
  demo              train a NULL and an oracle on the embedded fact world, switch sources off
  train             train (or resume) a run: --config=... --workdir=...
  tokenizer train   train the run's SentencePiece model: --config=... --workdir=...
  factworld         write the fact world as documents.jsonl and probes.jsonl: --out=DIR
"""


def _workdir(default: str | None = None) -> pathlib.Path:
  value = _WORKDIR.value or default
  if not value:
    raise app.UsageError("--workdir is required")
  return pathlib.Path(value)


def _run_tokenizer(config, workdir: pathlib.Path, corpus):
  from nullearn.data.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  from nullearn.demo import run_tokenizer  # pylint: disable=g-import-not-at-top
  if _TOKENIZER.value:
    tok = Tokenizer.load(_TOKENIZER.value)
    tok.save(workdir / "tokenizer.model")
    return tok
  return run_tokenizer(workdir, (d.text for d in corpus.documents), config)


def demo_main(argv):
  del argv
  from nullearn import demo  # pylint: disable=g-import-not-at-top
  demo.run(_CONFIG.value, _workdir("demo_out"))


def train_main(argv):
  del argv
  from nullearn import train  # pylint: disable=g-import-not-at-top
  from nullearn.data import corpus as corpus_lib  # pylint: disable=g-import-not-at-top
  config, workdir = _CONFIG.value, _workdir()
  workdir.mkdir(parents=True, exist_ok=True)
  corpus = corpus_lib.load(config)
  exclude = corpus_lib.resolve_sources(corpus, config.data.exclude_sources)
  tokenizer = _run_tokenizer(config, workdir, corpus)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=1))
  train.train(config, workdir, corpus_lib.without(corpus.documents, exclude), tokenizer)


def tokenizer_main(argv):
  if argv[1:] != ["train"]:
    raise app.UsageError("usage: nullearn tokenizer train --config=... --workdir=...")
  from nullearn.data import corpus as corpus_lib  # pylint: disable=g-import-not-at-top
  config, workdir = _CONFIG.value, _workdir()
  workdir.mkdir(parents=True, exist_ok=True)
  if (workdir / "tokenizer.model").exists():
    raise app.UsageError(f"{workdir}/tokenizer.model exists; remove it to train a new one")
  tok = _run_tokenizer(config, workdir, corpus_lib.load(config))
  print(f"wrote {workdir / 'tokenizer.model'} ({tok.vocab_size} pieces)")


def factworld_main(argv):
  del argv
  from nullearn.data import factworld, records  # pylint: disable=g-import-not-at-top
  if not _OUT.value:
    raise app.UsageError("--out is required")
  out = pathlib.Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  world = factworld.generate(factworld.FactWorldConfig(**_CONFIG.value.factworld.to_dict()))
  records.write_documents(out / "documents.jsonl", world.documents)
  records.write_probes(out / "probes.jsonl", world.probes)
  print(f"wrote {len(world.documents)} documents and {len(world.probes)} probes to {out}")


COMMANDS = {"demo": demo_main, "train": train_main, "tokenizer": tokenizer_main,
            "factworld": factworld_main}


def main(argv: list[str] | None = None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] not in COMMANDS:
    print(USAGE, file=sys.stderr)
    sys.exit(0 if len(argv) > 1 and argv[1] in ("-h", "--help", "help") else 2)
  command = argv.pop(1)

  def run(args):
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save and restore at INFO
    COMMANDS[command](args)
  app.run(run, argv=argv)


if __name__ == "__main__":
  main()
