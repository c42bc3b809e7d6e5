"""The paper's four zero-shot multiple-choice tasks, read from prepared TFDS datasets.

Every record becomes a `Question` formatted as lm-evaluation-harness formats it
(EleutherAI/lm-evaluation-harness, `lm_eval/tasks/`, target delimiter " "), so the
accuracies compare with published ones:

- arc_easy   `arc/arc_easy.yaml`: "Question: {question}\\nAnswer:" + " " + choice; test split.
- piqa       `piqa/piqa.yaml`: "Question: {goal}\\nAnswer:" + " " + sol1 / sol2; validation.
- sciq       `sciq/sciq.yaml`: "{support.lstrip()}\\nQuestion: {question}\\nAnswer:" + " " +
             distractor1..3 / correct_answer (gold 3); test split.
- winogrande `winogrande/default.yaml` + `preprocess_winogrande.py` (partial evaluation):
             each option replaces the blank in the sentence cut *before* it; both score
             the same continuation " " + (the sentence after the blank).strip(); validation
             split of the xl configuration (TFDS's `winogrande` validation is the same dev set).

Reading needs no TensorFlow (`as_data_source` on ArrayRecord). Preparing, once, into
TFDS_DATA_DIR (local or gs://), then copying it where the models are evaluated:

- SciQ has no TFDS builder: `Sciq` below converts the parquet files of the Hugging Face
  dataset allenai/sciq, without TensorFlow or `datasets`:
  `hf download allenai/sciq --repo-type=dataset --local-dir=DIR`, then
  `nullearn capability prepare sciq DIR`.
- ai2_arc, winogrande and piqa need TensorFlow to prepare in TFDS 4.9.10 (its archive
  extractor calls it; the `tfds build` command needs apache-beam and mlcroissant too):
  `pip install tensorflow-cpu`, then `nullearn capability prepare arc_easy` (likewise
  winogrande, piqa), or with TFDS alone `tfds.builder("ai2_arc/ARC-Easy",
  file_format="array_record").download_and_prepare()`. Offline, put the archive TFDS would
  fetch (ARC-V1-Feb2018.zip, winogrande_1.1.zip, physicaliqa-train-dev.zip) in a directory
  and pass it: `nullearn capability prepare piqa DIR` (TFDS checks its checksum).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow.parquet as pq
import tensorflow_datasets as tfds

# A legacy builder that tfds.builder("winogrande") does not find until its module is imported.
from tensorflow_datasets.text import winogrande as _winogrande_builder  # noqa: F401


@dataclasses.dataclass(frozen=True)
class Question:
  """One item as lm-eval scores it: choice i is `contexts[i]` followed by `continuations[i]`.

  `choices` are lm-eval's choice strings (`doc_to_choice`), whose lengths in characters
  normalise `acc_norm`; `query` is the prompt a router would see.
  """

  contexts: tuple[str, ...]
  continuations: tuple[str, ...]
  choices: tuple[str, ...]
  gold: int
  query: str


def _text(value: bytes | str) -> str:
  # Prepared datasets decode text features to bytes.
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _shared_context(context: str, choices: Sequence[str], gold: int) -> Question:
  if not 0 <= gold < len(choices):
    raise ValueError(f"gold choice {gold} is not among {len(choices)} choices")
  return Question(
    (context,) * len(choices), tuple(" " + c for c in choices), tuple(choices), gold, context
  )


def _arc(r: dict[str, Any]) -> Question:
  labels = [int(label) for label in r["choices"]["label"]]
  if int(r["answerKey"]) not in labels:
    raise ValueError(f"answerKey {int(r['answerKey'])} is not among the choice labels {labels}")
  choices = [_text(t) for t in r["choices"]["text"]]
  return _shared_context(
    f"Question: {_text(r['question'])}\nAnswer:", choices, labels.index(int(r["answerKey"]))
  )


def _piqa(r: dict[str, Any]) -> Question:
  return _shared_context(
    f"Question: {_text(r['goal'])}\nAnswer:", [_text(r["sol1"]), _text(r["sol2"])], int(r["label"])
  )


def _sciq(r: dict[str, Any]) -> Question:
  context = f"{_text(r['support']).lstrip()}\nQuestion: {_text(r['question'])}\nAnswer:"
  choices = [_text(r[k]) for k in ("distractor1", "distractor2", "distractor3", "correct_answer")]
  return _shared_context(context, choices, 3)


def _winogrande(r: dict[str, Any]) -> Question:
  sentence = _text(r["sentence"])
  if "_" not in sentence:
    raise ValueError(f"the sentence has no blank '_': {sentence!r}")
  blank = sentence.index("_")
  contexts = tuple(sentence[:blank] + _text(r[k]) for k in ("option1", "option2"))
  if int(r["label"]) not in (0, 1):
    raise ValueError(f"label {int(r['label'])} is not 0 or 1 (an unlabelled test record?)")
  return Question(
    contexts, (" " + sentence[blank + 1 :].strip(),) * 2, contexts, int(r["label"]), sentence
  )


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  tfds_name: str
  split: str
  metrics: tuple[str, ...]  # lm-eval's metric_list for the task
  to_question: Callable[[dict[str, Any]], Question]


TASKS = {
  t.name: t
  for t in (
    Task("arc_easy", "ai2_arc/ARC-Easy", "test", ("acc", "acc_norm"), _arc),
    Task("winogrande", "winogrande", "validation", ("acc",), _winogrande),
    Task("piqa", "piqa", "validation", ("acc", "acc_norm"), _piqa),
    Task("sciq", "sciq", "test", ("acc", "acc_norm"), _sciq),
  )
}


def task(name: str) -> Task:
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}: choose from {', '.join(TASKS)}")
  return TASKS[name]


def load_questions(
  name: str, *, data_dir: str | os.PathLike[str] | None = None, limit: int | None = None
) -> list[Question]:
  """The task's evaluation split as questions (the first `limit` records if given)."""
  spec = task(name)
  data_dir = os.fspath(data_dir) if data_dir else tfds.core.constants.get_default_data_dir()
  records = _open_split(spec, data_dir)
  out = []
  for i in range(len(records) if limit is None else min(limit, len(records))):
    try:
      out.append(spec.to_question(records[i]))
    except (KeyError, ValueError) as e:
      raise ValueError(f"{spec.tfds_name} {spec.split} record {i}: {e}") from e
  return out


def _open_split(spec: Task, data_dir: str) -> Sequence[dict[str, Any]]:
  """The split's ArrayRecord records; never downloads or builds."""
  try:
    return tfds.builder(spec.tfds_name, data_dir=data_dir).as_data_source(split=spec.split)
  except (ValueError, NotImplementedError) as e:  # unknown, unprepared, or not ArrayRecord
    raise FileNotFoundError(
      f"TFDS dataset {spec.tfds_name!r} is not prepared as ArrayRecord in {data_dir}: prepare "
      f"it once with `nullearn capability prepare {spec.name}"
      f"{' PARQUET_DIR' if spec.name == 'sciq' else ''}` (mc_tasks.prepare in Python) with "
      f"TFDS_DATA_DIR={data_dir}, or point TFDS_DATA_DIR at a prepared copy"
    ) from e


def prepare(
  name: str,
  *,
  data_dir: str | os.PathLike[str] | None = None,
  manual_dir: str | os.PathLike[str] | None = None,
) -> str:
  """Prepares the task's dataset as ArrayRecord under `data_dir` and returns where.

  `manual_dir` holds files fetched by hand: SciQ's parquet files (required), or the
  archives TFDS would download (e.g. ARC-V1-Feb2018.zip; checked against TFDS's checksums).
  """
  spec = task(name)
  if spec.name == "sciq":
    _sciq_parquet(manual_dir, "test")  # fail early, with the fix, if it is missing
  builder = tfds.builder(spec.tfds_name, data_dir=data_dir, file_format="array_record")
  config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
  try:
    builder.download_and_prepare(download_config=config)
  except Exception as e:  # pylint: disable=broad-except
    if _needs_tensorflow(e):
      raise RuntimeError(
        f"preparing {spec.tfds_name} needs TensorFlow (TFDS extracts its archive with it): "
        "`pip install tensorflow-cpu` where you prepare; reading needs none"
      ) from e
    raise
  return os.fspath(builder.data_path)


def _needs_tensorflow(error: BaseException | None) -> bool:
  while error is not None:
    if isinstance(error, ModuleNotFoundError) and error.name == "tensorflow":
      return True
    error = error.__cause__ or error.__context__
  return False


_SCIQ_COLUMNS = (
  "question",
  "distractor1",
  "distractor2",
  "distractor3",
  "correct_answer",
  "support",
)


def _sciq_parquet(manual_dir: str | os.PathLike[str] | None, split: str) -> list[pathlib.Path]:
  """The split's parquet files under `manual_dir` (the Hub repo's `data/<split>-*.parquet`)."""
  if manual_dir is None:
    raise FileNotFoundError(
      f"SciQ is prepared from parquet files: {Sciq.MANUAL_DOWNLOAD_INSTRUCTIONS}"
    )
  files = sorted(pathlib.Path(manual_dir).glob(f"**/{split}-*.parquet"))
  if not files and split == "test":
    raise FileNotFoundError(
      f"no {split}-*.parquet under {manual_dir}: {Sciq.MANUAL_DOWNLOAD_INSTRUCTIONS}"
    )
  return files


class Sciq(tfds.core.GeneratorBasedBuilder):
  """SciQ from the parquet files of the Hugging Face dataset `allenai/sciq`, in their order."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "put the parquet files of the Hugging Face dataset allenai/sciq "
    "(data/{train,validation,test}-00000-of-00001.parquet) in one directory, e.g. with "
    "`hf download allenai/sciq --repo-type=dataset --local-dir=DIR`"
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      disable_shuffling=True,
      homepage="https://allenai.org/data/sciq",
      features=tfds.features.FeaturesDict({k: tfds.features.Text() for k in _SCIQ_COLUMNS}),
    )

  def _split_generators(self, dl_manager):
    splits = {s: _sciq_parquet(dl_manager.manual_dir, s) for s in ("train", "validation", "test")}
    return {s: self._generate_examples(files) for s, files in splits.items() if files}

  def _generate_examples(self, files):
    index = 0
    for path in files:
      for row in pq.read_table(path, columns=list(_SCIQ_COLUMNS)).to_pylist():
        yield index, row
        index += 1
