"""`nullearn <command>`: demo, train, eval, tokenizer train, titles, factworld, and serving:
router, generate, forget, export, attribute.

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
  "config", str(_CONFIGS / "tiny.py"), "Run config: a configs/*.py file, optionally :variant."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, tokenizer.")
_TOKENIZER = flags.DEFINE_string(
  "tokenizer", None, "An existing tokenizer.model to use instead of training one."
)
_OUT = flags.DEFINE_string("out", None, "Output directory (factworld).")
_DRY_RUN = flags.DEFINE_bool(
  "dry_run",
  False,
  "train: print the plan on the config's mesh (parameters, bytes per "
  "device, FLOPs, expected tokens/s, forgetting budget, the compiled step's memory on faked "
  "devices) without allocating the model; exits 2 if the step does not fit the chip.",
)
_MULTIHOST = flags.DEFINE_bool(
  "multihost", False, "Call jax.distributed.initialize (on TPU VMs it finds its peers)."
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of JAX processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_ORACLE = flags.DEFINE_string(
  "oracle", None, "eval: workdir of a model retrained without the forgotten sources."
)
_PLAIN = flags.DEFINE_string(
  "plain", None, "eval: workdir of a plain transformer trained on the same data."
)
_FORGET = flags.DEFINE_list(
  "forget",
  None,
  "eval: sources to forget, ids or names "
  "(default: --config.eval.forget, else the run's forget ledger).",
)
_CORPUS = flags.DEFINE_string(
  "corpus", None, "eval: documents .jsonl (default: the corpus the checkpoint was trained on)."
)
_FORCE = flags.DEFINE_bool(
  "force",
  False,
  "eval: compare with an oracle or plain model that fails validation (the report says so).",
)
_PROBES = flags.DEFINE_string(
  "probes",
  None,
  "eval: probes .jsonl (default: the corpus's own, or cloze probes built from the text).",
)
_PARQUET = flags.DEFINE_string(
  "parquet",
  None,
  "prepare: the dump's parquet files, a directory "
  "or a glob (default: download them into --out/downloads).",
)
_PARQUET_URL = flags.DEFINE_string(
  "parquet_url", None, "prepare: where to download the parquet shards from (default: Hugging Face)."
)
_WORKERS = flags.DEFINE_integer(
  "workers", None, "prepare: processes converting shards (default: one per CPU)."
)
_PROMPT = flags.DEFINE_string(
  "prompt",
  None,
  "generate, attribute: the prompt. generate "
  "refuses one that does not fit the context with --max_new_tokens; "
  "attribute cuts it from the left, as option scoring does.",
)
_CONTINUATION = flags.DEFINE_string(
  "continuation", None, "attribute: the text whose source is sought, following --prompt."
)
_SOURCE = flags.DEFINE_string(
  "source", None, "generate: serve with this source's sinks (an id or a name)."
)
_ROUTE = flags.DEFINE_bool(
  "route",
  False,
  "generate: route the prompt to its nearest surviving source (the run's router index).",
)
_MAX_NEW = flags.DEFINE_integer(
  "max_new_tokens",
  16,
  "generate: at most this many new tokens "
  "(fewer at EOS); with the prompt they must fit the model's "
  "context.",
)
_TEMPERATURE = flags.DEFINE_float(
  "temperature", 0.0, "generate: sampling temperature (0: greedy, the argmax at every step)."
)
_TOP_K = flags.DEFINE_integer(
  "top_k", 0, "generate: sample among the k most likely tokens (0: all)."
)
_TOP_P = flags.DEFINE_float(
  "top_p",
  1.0,
  "generate: sample among the fewest most likely tokens whose probability reaches top_p (1: all).",
)
_SEED = flags.DEFINE_integer(
  "seed", 0, "generate: the sampling seed (a seed gives the same text every time)."
)
_SOURCES = flags.DEFINE_list("sources", None, "forget: sources to forget, ids or names.")
_REASON = flags.DEFINE_string("reason", None, "forget: why (kept in the ledger).")
_LIST = flags.DEFINE_bool("list", False, "forget: show the ledger instead.")
_FORMAT = flags.DEFINE_enum(
  "format",
  "checkpoint",
  ["checkpoint", "hf"],
  "export: a run directory without the ledgered sinks, or a transformers Llama.",
)
_SWITCH = flags.DEFINE_enum(
  "switch",
  "expected",
  ["backbone", "expected"],
  "export --format=hf: the switch folded into the weights.",
)
_CANDIDATES = flags.DEFINE_list(
  "candidates",
  None,
  "attribute: candidate sources, ids or "
  "names (default: the router's serve.candidates best for the "
  "prompt).",
)
_SCORE = flags.DEFINE_enum(
  "score",
  "continuation",
  ["continuation", "text"],
  "attribute: rank "
  "by the sinks' gain on the continuation (whose sinks explain it) or on "
  "the whole text (which source most likely wrote it).",
)

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

serving (the run's forget ledger applied: its sources are never served):
  router            build the run's prompt router (BM25 index in WORKDIR/router): --workdir=RUN
  generate          continue a prompt: --workdir=RUN --prompt=... [--source=ID|NAME | --route]
                    [--max_new_tokens=16] [--temperature=0 --top_k=0 --top_p=1 --seed=0]
                    (neither --source nor --route: the serve.fallback switch; temperature 0:
                    greedy)
  forget            ledger sources: --workdir=RUN --sources=IDS|NAMES --reason=...; or --list
  export            --workdir=RUN --out=DIR [--format=checkpoint | --format=hf
                    --switch=backbone|expected]
  attribute         rank sources by how much their sinks raise a continuation: --workdir=RUN
                    --prompt=... --continuation=... [--candidates=IDS|NAMES]
                    [--score=continuation|text]
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
    tokenizer_lib.for_run(
      workdir,
      corpus_lib.tokenizer_texts(corpus, config),
      config.tokenizer,
      config.model.vocab_size,
      given=_TOKENIZER.value,
    )
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

    dryrun.fake_devices(_CONFIG.value.mesh.num_devices)  # before JAX's first device query
    plan = dryrun.plan(_CONFIG.value)
    print(dryrun.format_plan(plan))
    if not plan["fits"]:
      m = plan["memory"]
      raise ValueError(
        f"data.batch_size: {m['rows_per_device']} rows per device need "
        f"{m['peak'] / 2**30:.2f} GiB, more than the {plan['chip_hbm_bytes'] / 2**30:.0f}"
        f" GiB of a {plan['chip']}; use fewer rows per device, model.remat or a "
        "larger mesh"
      )
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
  print(
    f"wrote a title index of {len(index)} sources to {out}; use --config.data.title_index={out}"
  )


def eval_main(argv):
  del argv
  import ml_collections

  from nullearn import evaluate, inference, report
  from nullearn import ledger as ledger_lib
  from nullearn.data import corpus as corpus_lib

  out = _out("the report directory")
  config = _CONFIG.value
  # Evaluation measures the counterfactual: its "sink on" condition, the NULL's post-hoc
  # baselines and the attacks need the forgotten sinks, so the ledger is not applied; every
  # other condition states its own exclusions. With no --forget, the ledger's sources are
  # the ones evaluated.
  null = inference.load_run(_workdir(), apply_ledger=False)
  models = evaluate.Models(
    null,
    oracle=inference.load_run(_ORACLE.value) if _ORACLE.value else None,
    plain=inference.load_run(_PLAIN.value) if _PLAIN.value else None,
  )
  run_config = ml_collections.ConfigDict(null.meta["config"])
  if _CORPUS.value:
    run_config.data.corpus = _CORPUS.value
  if _PROBES.value:
    run_config.data.probes = _PROBES.value
  if os.environ.get("TFDS_DATA_DIR"):  # where this machine keeps the prepared dataset
    run_config.data.tfds_data_dir = os.environ["TFDS_DATA_DIR"]
  corpus = corpus_lib.load(run_config)
  corpus_lib.check_clustering(corpus, null.meta)
  forget = corpus_lib.resolve_sources(
    corpus, _FORGET.value or config.eval.forget or [str(i) for i in ledger_lib.read(_workdir()).ids]
  )
  problems = evaluate.validate(models, forget)
  if problems and not _FORCE.value:
    raise evaluate.ModelMismatchError(
      f"{problems[0]} (--force compares anyway; the report then says so)"
    )
  result = evaluate.evaluate_corpus(
    models, corpus, forget, config.eval, forced=problems, serve=config.serve
  )
  for path in report.write(result, out):
    print(f"wrote {path}")
  print((epath.Path(out) / "report.md").read_text())


def prepare_main(argv):
  if argv[1:] != ["wikipedia"]:
    raise app.UsageError(
      "usage: nullearn prepare wikipedia --out=TFDS_DATA_DIR [--parquet=DIR_OR_GLOB] [--workers=N]"
    )
  from nullearn.data import prepare

  out = _out("the TFDS data directory")
  done = prepare.prepare_wikipedia(
    out,
    parquet=_PARQUET.value,
    workers=_WORKERS.value,
    parquet_url=_PARQUET_URL.value or prepare.PARQUET_URL,
  )
  what = "already prepared" if done.reused else f"prepared in {done.seconds:.0f} s"
  print(
    f"{done.path}: {done.articles:,} articles, {done.num_bytes / 2**30:.2f} GiB, {what}.\n"
    f"Train with TFDS_DATA_DIR={out} --config.data.corpus=tfds:{prepare.NAME}/{prepare.CONFIG}"
  )


def capability_main(argv):
  from nullearn import capability

  capability.capability_main(argv)


def _required(flag, what: str) -> str:
  if flag.value is None:
    raise app.UsageError(f"--{flag.name} is required ({what})")
  return flag.value


def _run_meta(workdir) -> dict:
  """The metadata (config, sink geometry) of a run's latest checkpoint, without its weights."""
  from nullearn import checkpoint as ckpt_lib

  ckpt, step = ckpt_lib.require_checkpoint(workdir)
  meta = ckpt.read_meta(step)
  ckpt.close()
  return meta


def _corpus(meta: dict):
  """The corpus a run was trained on."""
  import ml_collections

  from nullearn.data import corpus as corpus_lib

  corpus = corpus_lib.load(ml_collections.ConfigDict(meta["config"]))
  corpus_lib.check_clustering(corpus, meta)
  return corpus


def _resolve(corpus, specs, flag: str) -> list[int]:
  from nullearn.data import corpus as corpus_lib

  try:
    return corpus_lib.resolve_sources(corpus, specs)
  except ValueError as e:
    raise ValueError(f"{flag}: {e}") from e


def _name(corpus, source_id: int) -> str:
  if corpus.in_memory:
    return corpus.names[source_id]
  return corpus.documents.by_ids([source_id])[0].source  # a page id, through the source index


def router_main(argv):
  del argv
  import time

  from nullearn import router as router_lib

  workdir = _workdir()
  meta = _run_meta(workdir)
  corpus = _corpus(meta)
  data = meta.get("data", {})
  gone = set(data.get("excluded", ())) | set(data.get("heldout", ()))  # not trained on
  docs = (
    corpus.documents
    if corpus.in_memory
    else map(corpus.documents.__getitem__, range(len(corpus.documents)))
  )
  entries = (
    (s, t)
    for s, t in router_lib.source_texts(docs, _CONFIG.value.serve.leading_words)
    if s not in gone
  )
  t0 = time.time()
  index = router_lib.PromptRouter.build(entries, workdir / router_lib.DIRECTORY)
  print(
    f"indexed {len(index):,} sources in {time.time() - t0:.1f} s: {workdir / router_lib.DIRECTORY}"
  )


def generate_main(argv):
  del argv
  from nullearn import inference
  from nullearn import router as router_lib
  from nullearn.sampler import Sampling
  from nullearn.switch import Switch

  prompt, serve = _required(_PROMPT, "the text to continue"), _CONFIG.value.serve
  if not prompt.strip():
    raise ValueError("--prompt: is empty")
  sampling = Sampling(_TEMPERATURE.value, _TOP_K.value, _TOP_P.value, _SEED.value)
  if _SOURCE.value is not None and _ROUTE.value:
    raise app.UsageError("--source and --route: give one or neither")
  run = inference.load_run(_workdir())
  switch = router_lib.fallback(serve.fallback)
  if _SOURCE.value is not None:
    (source,) = _resolve(_corpus(run.meta), [_SOURCE.value], "--source")
    switch = Switch.sources(source)
  elif _ROUTE.value:
    route = run.router().route(prompt, min_score=serve.min_score)
    if route.source is not None:
      print(f"routed to source {route.source} (BM25 {route.score:.2f})", file=sys.stderr)
      switch = Switch.sources(route.source)
    else:
      print(
        f"no surviving source scored above serve.min_score={serve.min_score}: served by "
        f"serve.fallback={serve.fallback}",
        file=sys.stderr,
      )
  print(inference.generate(run, prompt, switch, _MAX_NEW.value, sampling=sampling))


def forget_main(argv):
  del argv
  from nullearn import ledger as ledger_lib
  from nullearn import surgery
  from nullearn.masks import SinkGeometry

  workdir = _workdir()
  meta = _run_meta(workdir)  # a run: no ledger is kept for a directory that is none
  if _LIST.value:
    print(ledger_lib.format_entries(ledger_lib.read(workdir).entries))
    return
  specs = _required(_SOURCES, "ids or names of the sources to forget")
  reason = ledger_lib.check_reason(_REASON.value)
  geometry = SinkGeometry.from_dict(meta["sink_geometry"])
  if not geometry.pool:
    raise ValueError(
      f"--workdir: {workdir} is a plain transformer (pool 0): it has no sinks to "
      "switch a source off with"
    )
  corpus = _corpus(meta)
  ids = _resolve(corpus, specs, "--sources")
  entries = ledger_lib.append(workdir, [(i, _name(corpus, i)) for i in ids], reason)
  for e in entries:
    print(f"forgot source {e.id} ({e.name!r}): {e.reason}")
  ledger = ledger_lib.read(workdir)
  gone = len(surgery.removed_sinks(geometry, ledger.ids, 0))
  print(
    f"the ledger holds {len(ledger)} source(s); their sinks are {gone / geometry.pool:.1%} "
    f"of the pool{' (layer 0)' if geometry.per_layer_masks else ''}. Every load of the run "
    "leaves them out; `nullearn export` writes weights without them."
  )


def export_main(argv):
  del argv
  from nullearn import evaluate, export, inference
  from nullearn import ledger as ledger_lib

  workdir, out = _workdir(), export.check_out(_out("the export directory"))
  if _FORMAT.value == "hf":
    path = export.export_hf(inference.load_run(workdir), out, _SWITCH.value)
    print(f"wrote a transformers Llama ({_SWITCH.value} switch folded in) to {path}")
    return
  ledger = ledger_lib.read(workdir)
  raw = inference.load_run(workdir, apply_ledger=False)  # scores the retained probes before
  run = inference.with_ledger(raw, ledger)
  corpus = _corpus(run.meta)
  others, exact = export.others_of(ledger, corpus.names if corpus.in_memory else None)
  path = export.export_checkpoint(run, out)
  report = export.collateral(
    run.model_cfg.geometry,
    run.model_cfg.num_layers,
    ledger,
    others,
    exact,
    len(corpus.names) if exact else len(corpus.documents),
  )
  probes = evaluate.retained_probes(
    corpus.probes, set(ledger.ids.tolist()), _CONFIG.value.eval.max_retained_probes, 0
  )
  if probes:
    report["retained_probes"] = export.retained_truth_ratios(raw, run, probes)
  export.write_collateral(report, path)
  print(f"wrote {path} without the sinks of {len(ledger)} ledgered source(s)")
  print((path / "collateral.md").read_text())


def attribute_main(argv):
  del argv
  from nullearn import attribution, inference

  prompt = _required(_PROMPT, "the text before the continuation")
  continuation = _required(_CONTINUATION, "the text whose source is sought")
  attribution.check_text(prompt, continuation)
  run = inference.load_run(_workdir())
  corpus = _corpus(run.meta)
  if _CANDIDATES.value:
    ids = _resolve(corpus, _CANDIDATES.value, "--candidates")
  else:
    ids = attribution.candidates(run, run.router(), prompt, _CONFIG.value.serve.candidates)
  ranked = attribution.attribute(run, prompt, continuation, ids, _SCORE.value)
  print(f"{'rank':>4}  {'source':>10}  {'gain':>8}  {'nll':>7}  name")
  for i, a in enumerate(ranked, start=1):
    print(f"{i:>4}  {a.source:>10}  {a.gain:>8.3f}  {a.nll:>7.3f}  {_name(corpus, a.source)}")


def factworld_main(argv):
  del argv
  from nullearn.data import factworld, records

  out = pathlib.Path(_out("where to write the files"))
  out.mkdir(parents=True, exist_ok=True)
  world = factworld.generate(factworld.FactWorldConfig.from_config(_CONFIG.value))
  records.write_documents(out / "documents.jsonl", world.documents)
  records.write_probes(out / "probes.jsonl", world.probes)
  print(f"wrote {len(world.documents)} documents and {len(world.probes)} probes to {out}")


COMMANDS = {
  "demo": demo_main,
  "train": train_main,
  "eval": eval_main,
  "tokenizer": tokenizer_main,
  "titles": titles_main,
  "prepare": prepare_main,
  "factworld": factworld_main,
  "capability": capability_main,
  "router": router_main,
  "generate": generate_main,
  "forget": forget_main,
  "export": export_main,
  "attribute": attribute_main,
}


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
