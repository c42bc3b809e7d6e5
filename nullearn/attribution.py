"""Source attribution: which source's sinks make a continuation likely.

A source's sinks hold what only it states, so the source behind a text is the
one whose sinks raise the text's likelihood most over the backbone alone. The
candidates are the prompt's routed sources (the serving router's top k over
the prompt and continuation) or a given list; forgotten sources are never
candidates, and naming one is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from nullearn import batching, inference
from nullearn.inference import Run
from nullearn.router import PromptRouter
from nullearn.switch import Switch


@dataclasses.dataclass(frozen=True)
class Attribution:
  source: int
  gain: float  # nats per continuation token: backbone NLL minus the NLL with its sinks on
  nll: float  # nats per continuation token with the source's sinks on


def candidates(run: Run, router: PromptRouter, prompt: str, continuation: str,
               k: int) -> list[int]:
  """The k sources the router finds for the prompt and continuation, forgotten ones never."""
  return [r.source for r in router.top(f"{prompt} {continuation}", k, exclude=run.ledger.ids)]


def continuation_row(run: Run, prompt: str, continuation: str) -> tuple[np.ndarray, int]:
  """(row, where the continuation starts). A prompt too long for the context is cut from the
  left, as option scoring does; a continuation that does not fit is refused."""
  if not prompt.strip():
    raise ValueError("--prompt: is empty")
  if not continuation.strip():
    raise ValueError("--continuation: is empty")
  cont = np.asarray(run.tokenizer.encode(continuation), np.int32)  # as an option is scored
  if len(cont) >= run.context:
    raise ValueError(f"--continuation: {len(cont)} tokens leave no room for a prompt in the "
                     f"model's context of {run.context} tokens")
  return inference.scored_row(run.tokenizer.encode_document(prompt)[:-1], cont, run.context)


def attribute(run: Run, prompt: str, continuation: str, sources: Sequence[int],
              batch_size: int = 64) -> list[Attribution]:
  """`sources` ranked by how much their sinks raise the continuation's likelihood."""
  ids = np.asarray(sources, np.int64)
  if not ids.size:
    raise ValueError("--candidates: no candidate sources (is the router index empty, or is "
                     "every source forgotten?)")
  run.ledger.refuse(ids, "--candidates")
  row, start = continuation_row(run, prompt, continuation)
  nll = lambda switch, n: inference.row_nll(run, np.broadcast_to(row, (n, len(row))),
                                            np.full(n, start), np.full(n, len(row)), switch)
  backbone = float(nll(Switch.backbone(), 1)[0])
  own = np.zeros(len(ids), np.float32)
  for idx, m in batching.padded_batches(len(ids), min(batch_size, len(ids))):
    own[idx[:m]] = nll(Switch.sources(ids[idx][:, None]), len(idx))[:m]
  order = np.argsort(own, kind="stable")
  return [Attribution(int(ids[i]), backbone - float(own[i]), float(own[i])) for i in order]
