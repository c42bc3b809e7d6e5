"""Source attribution: which source's sinks explain a text.

A source's sinks hold what only it states. `attribute` ranks candidate
sources by how much their sinks lower the negative log-likelihood (nats per
token) over the backbone alone, of

- the continuation, given the prompt (`score="continuation"`): whose sinks
  explain the fact. A false continuation gets a negative gain from the true
  source's sinks;
- the whole text, prompt and continuation (`score="text"`): the source most
  likely to have produced the text. It weighs the prompt's subject (a name its
  own sinks memorised) above the continuation, so it names the subject's source
  even for a false continuation.

The candidates are the sources the serving router finds for the *prompt* (a
prompt names its subject; routing the continuation's words too brings in the
sources that state the same answer of someone else) or a given list;
forgotten sources are never candidates, and naming one is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from nullearn import batching, inference
from nullearn.inference import Run
from nullearn.router import PromptRouter
from nullearn.switch import Switch

SCORES = ("continuation", "text")


@dataclasses.dataclass(frozen=True)
class Attribution:
  source: int
  gain: float  # nats per scored token: backbone NLL minus the NLL with its sinks on
  nll: float  # nats per scored token with the source's sinks on


def candidates(run: Run, router: PromptRouter, prompt: str, k: int) -> list[int]:
  """The k sources the router finds for the prompt, the run's forgotten ones never."""
  return [r.source for r in router.without(run.ledger.ids).top(prompt, k)]


def check_text(prompt: str, continuation: str) -> None:
  if not prompt.strip():
    raise ValueError("--prompt: is empty")
  if not continuation.strip():
    raise ValueError("--continuation: is empty")


def continuation_row(run: Run, prompt: str, continuation: str) -> tuple[np.ndarray, int]:
  """(row, where the continuation starts). A prompt too long for the context is cut from the
  left, as option scoring does; a continuation that does not fit is refused."""
  check_text(prompt, continuation)
  cont = np.asarray(run.tokenizer.encode(continuation), np.int32)  # as an option is scored
  if len(cont) >= run.context:
    raise ValueError(
      f"--continuation: {len(cont)} tokens leave no room for a prompt in the "
      f"model's context of {run.context} tokens"
    )
  return inference.scored_row(run.tokenizer.encode_document(prompt)[:-1], cont, run.context)


def attribute(
  run: Run,
  prompt: str,
  continuation: str,
  sources: Sequence[int],
  score: str = "continuation",
  batch_size: int = 64,
) -> list[Attribution]:
  """`sources` ranked by how much their sinks raise the likelihood of the continuation
  (or of the whole text, `score="text"`), best first."""
  if score not in SCORES:
    raise ValueError(f"--score: must be one of {SCORES}, got {score!r}")
  row, start = continuation_row(run, prompt, continuation)
  ids = np.asarray(sources, np.int64)
  if not ids.size:
    raise ValueError(
      "--candidates: no candidate sources (no source shares a word with the "
      "prompt, or every one is forgotten)"
    )
  run.ledger.refuse(ids, "--candidates")
  start = 1 if score == "text" else start  # everything after BOS
  nll = lambda switch, n: inference.row_nll(
    run, np.broadcast_to(row, (n, len(row))), np.full(n, start), np.full(n, len(row)), switch
  )
  backbone = float(nll(Switch.backbone(), 1)[0])
  own = np.zeros(len(ids), np.float32)
  for idx, m in batching.padded_batches(len(ids), min(batch_size, len(ids))):
    own[idx[:m]] = nll(Switch.sources(ids[idx][:, None]), len(idx))[:m]
  order = np.argsort(own, kind="stable")
  return [Attribution(int(ids[i]), backbone - float(own[i]), float(own[i])) for i in order]
