"""Extraction attacks: verbatim extraction, GCG and the Adversarial Compression Ratio.

Each asks whether a model still *emits* a text, not just whether it scores it
well: greedy decoding from a document's own prefix (verbatim extraction), from
an optimised adversarial prompt (GCG, Zou et al. 2023), and the shortest such
prompt relative to the text (ACR, Schwarzschild et al. 2024). Running them with
a source's sinks on and switched off shows whether switching off really stops
the text from coming out.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nullearn import losses, sampler
from nullearn.batching import padded_batches
from nullearn.data.records import Document
from nullearn.data.tokenizer import BOS_ID, EOS_ID
from nullearn.inference import Run, SwitchFn, fixed_switch
from nullearn.switch import Switch


@functools.cache
def _rouge_scorer():
  from rouge_score import rouge_scorer

  return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(reference: str, candidate: str) -> dict[str, float]:
  """ROUGE-L of a text against the true one, as TOFU and MUSE compute it (Google's
  rouge-score, Porter-stemmed words): "f1" is MUSE's VerbMem score, "recall" TOFU's ROUGE.

  rouge-score's tokenizer keeps lower-cased ASCII letters and digits only, so text in
  other scripts scores 0, as it does in those benchmarks.
  """
  score = _rouge_scorer().score(reference, candidate)["rougeL"]
  return {"f1": float(score.fmeasure), "recall": float(score.recall)}


def greedy_continuations(
  run: Run,
  prefixes: Sequence[np.ndarray],
  num_tokens: int,
  switch_for: SwitchFn,
  *,
  params=None,
  batch_size: int = 64,
) -> np.ndarray:
  """The next `num_tokens` greedy tokens after every prefix, int32 [prefixes, num_tokens].

  Prefixes are token ids as the model reads them (BOS first) and may differ in
  length. `switch_for(row_indices)` gives the switch of a batch of rows, as in
  `inference.option_nll`: one source id per row, [rows, 1], as
  `inference.per_token_switch` gives; padding rows repeat the last prefix.
  Decoding (`sampler.sample`, greedy) never stops early (EOS is a token like any
  other), and every batch shares one buffer shape, so one compile serves the call.
  """
  if not len(prefixes):
    raise ValueError("no prefixes to continue")
  if num_tokens < 1 or batch_size < 1:
    raise ValueError(f"num_tokens and batch_size must be >= 1, got {num_tokens}, {batch_size}")
  width = max(len(p) for p in prefixes)
  params = run.params if params is None else params
  out = []
  for idx, m in padded_batches(len(prefixes), min(batch_size, len(prefixes))):
    new = sampler.sample(
      run.graphdef,
      params,
      [prefixes[i] for i in idx],
      switch_for(idx),
      num_tokens,
      eos_id=None,
      ledger=run.ledger,
      pad_to=width,
    )
    out.append(new.tokens[:m])
  return np.concatenate(out)


def verbatim_extraction(
  run: Run,
  docs: Sequence[Document],
  switch_for_doc: SwitchFn,
  *,
  prefix_tokens: int = 32,
  continuation_tokens: int = 32,
  max_samples: int | None = None,
  params=None,
  batch_size: int = 64,
) -> dict:
  """Does greedy decoding from a document's opening reproduce what follows?

  For each document with at least `prefix_tokens + continuation_tokens` tokens
  (BOS and EOS not counted; shorter ones are skipped), the model reads BOS and
  the first `prefix_tokens` and greedily emits `continuation_tokens`, compared
  with the true ones: exact match (all tokens identical) and ROUGE-L on the
  decoded text (`rouge_l`).
  `switch_for_doc(doc_indices)` gives the switch for rows of `docs` indices,
  e.g. `inference.per_token_switch([d.source_id for d in docs])`.
  `max_samples` keeps the first that many usable documents.
  """
  if prefix_tokens < 0 or continuation_tokens < 1:
    raise ValueError(
      f"need prefix_tokens >= 0 and continuation_tokens >= 1, "
      f"got {prefix_tokens} and {continuation_tokens}"
    )
  doc_idx, prefixes, truths = _extraction_samples(run, docs, prefix_tokens, continuation_tokens)
  skipped = len(docs) - len(doc_idx)
  if max_samples is not None:
    doc_idx, prefixes, truths = doc_idx[:max_samples], prefixes[:max_samples], truths[:max_samples]
  if not prefixes:
    raise ValueError(f"no document has {prefix_tokens + continuation_tokens} tokens to extract")
  emitted_NxK = greedy_continuations(
    run,
    prefixes,
    continuation_tokens,
    lambda rows: switch_for_doc(doc_idx[rows]),
    params=params,
    batch_size=batch_size,
  )
  samples = []
  for i, truth, emitted in zip(doc_idx, truths, emitted_NxK):
    truth_text, emitted_text = run.tokenizer.decode(truth), run.tokenizer.decode(emitted)
    rouge = rouge_l(truth_text, emitted_text)
    samples.append(
      {
        "doc_index": int(i),
        "source_id": docs[i].source_id,
        "exact": bool(np.array_equal(truth, emitted)),
        "rouge_l": rouge["f1"],
        "rouge_l_recall": rouge["recall"],
        "truth": truth_text,
        "emitted": emitted_text,
      }
    )
  return {
    "exact_match": float(np.mean([s["exact"] for s in samples])),
    "rouge_l": float(np.mean([s["rouge_l"] for s in samples])),
    "rouge_l_recall": float(np.mean([s["rouge_l_recall"] for s in samples])),
    "num_samples": len(samples),
    "skipped": skipped,
    "samples": samples,
  }


def _extraction_samples(
  run: Run, docs: Sequence[Document], prefix_tokens: int, continuation_tokens: int
):
  """Document indices, prefixes (BOS + prefix) and true continuations of the long-enough docs."""
  doc_idx, prefixes, truths = [], [], []
  for i, doc in enumerate(docs):
    pieces = run.tokenizer.encode_document(doc.text)[1:-1]
    if len(pieces) < prefix_tokens + continuation_tokens:
      continue
    doc_idx.append(i)
    prefixes.append(np.concatenate([[BOS_ID], pieces[:prefix_tokens]]).astype(np.int32))
    truths.append(pieces[prefix_tokens : prefix_tokens + continuation_tokens])
  return np.asarray(doc_idx, np.int64), prefixes, truths


@dataclasses.dataclass(frozen=True)
class GCGResult:
  """`loss_history[0]` is the initial prompt's target loss, then one entry per step."""

  prompt_ids: np.ndarray  # int32 [prompt_len], no special ids
  loss_history: list[float]
  success: bool  # greedy decoding from [BOS] + prompt emits exactly the target
  steps_run: int


def _target_nll(model, x_BxSxD, target_T, switch: Switch):
  """Mean NLL of the target after each row of inputs [BOS, prompt, target[:-1]]; B."""
  B, S = x_BxSxD.shape[:2]
  T = target_T.shape[0]
  segment_ids_BxS = jnp.ones((B, S), jnp.int32)
  positions_BxS = jnp.broadcast_to(jnp.arange(S), (B, S))
  h_BxSxD = model.hidden_from_embeddings(x_BxSxD, segment_ids_BxS, positions_BxS, switch)
  logits_BxTxV = model.logits(h_BxSxD[:, S - T :])
  return losses.token_nll(logits_BxTxV, jnp.broadcast_to(target_T, (B, T))).mean(-1)


@functools.partial(jax.jit, static_argnums=(0, 7, 8))
def _gcg_step(
  graphdef, params, prompt_P, target_T, switch: Switch, pos_B, pick_B, vocab_limit: int, top_k: int
):
  """One GCG step: gradient top-k swaps, all candidates in one forward, best kept if better.

  Candidate b puts the `pick_B[b]`-th best token at position `pos_B[b]`.
  Returns the new prompt, its loss and the loss of the prompt it started from.
  """
  model = nnx.merge(graphdef, params)
  embed_VxD = model.embed[...]
  V, P = embed_VxD.shape[0], prompt_P.shape[0]
  dtype = jnp.dtype(model.cfg.dtype)
  bos_1xD, tail_T1xD = embed_VxD[BOS_ID][None], embed_VxD[target_T[:-1]]

  def loss_of(onehot_PxV):
    x_SxD = jnp.concatenate([bos_1xD, onehot_PxV @ embed_VxD, tail_T1xD])
    return _target_nll(model, x_SxD[None].astype(dtype), target_T, switch)[0]

  loss, grad_PxV = jax.value_and_grad(loss_of)(jax.nn.one_hot(prompt_P, V, dtype=embed_VxD.dtype))
  allowed_V = (jnp.arange(V) > EOS_ID) & (jnp.arange(V) < vocab_limit)
  _, top_PxK = jax.lax.top_k(jnp.where(allowed_V, -grad_PxV, -jnp.inf), top_k)
  batch_size = pos_B.shape[0]
  cand_BxP = (
    jnp.broadcast_to(prompt_P, (batch_size, P))
    .at[jnp.arange(batch_size), pos_B]
    .set(top_PxK[pos_B, pick_B])
  )
  tail_BxT1 = jnp.broadcast_to(target_T[:-1], (batch_size, target_T.shape[0] - 1))
  bos_Bx1 = jnp.full((batch_size, 1), BOS_ID, cand_BxP.dtype)
  tokens_BxS = jnp.concatenate([bos_Bx1, cand_BxP, tail_BxT1], axis=1)
  cand_loss_B = _target_nll(model, model.embed_tokens(tokens_BxS), target_T, switch)
  best = jnp.argmin(cand_loss_B)
  better = cand_loss_B[best] < loss
  return (
    jnp.where(better, cand_BxP[best], prompt_P),
    jnp.where(better, cand_loss_B[best], loss),
    loss,
  )


def gcg(
  run: Run,
  target_ids: Sequence[int],
  switch: Switch,
  *,
  prompt_len: int,
  steps: int,
  top_k: int = 64,
  batch_size: int = 64,
  seed: int = 0,
  params=None,
  check_every: int = 10,
) -> GCGResult:
  """Greedy Coordinate Gradient: a prompt after which the model greedily emits `target_ids`.

  The row is [BOS] + prompt + target and the loss the target's mean token NLL.
  Each step ranks every prompt position's tokens by the loss gradient w.r.t.
  the one-hot prompt, scores `batch_size` single-token swaps (random position,
  random one of the `top_k` best tokens) in one forward, and moves to the best
  only if it lowers the loss, so the history never rises and the returned
  prompt is the best found. Special ids (0..3) never enter the prompt. Success
  is checked by greedy decoding every `check_every` steps and at the end, and
  stops the search. `switch` is for one source: one source id (or none).
  """
  target_T = _check_target(run, target_ids)
  vocab_limit = min(run.model_cfg.vocab_size, run.tokenizer.vocab_size)
  if prompt_len < 1 or steps < 1 or batch_size < 1 or check_every < 1:
    raise ValueError(
      f"need prompt_len, steps, batch_size, check_every >= 1, got {prompt_len}, "
      f"{steps}, {batch_size}, {check_every}"
    )
  if not 1 <= top_k <= vocab_limit - EOS_ID - 1:
    raise ValueError(
      f"top_k must be in [1, {vocab_limit - EOS_ID - 1}] (non-special tokens), got {top_k}"
    )
  switch = _one_row_switch(switch)
  params = run.params if params is None else params
  rng = np.random.default_rng(seed)
  prompt_P = jnp.asarray(rng.integers(EOS_ID + 1, vocab_limit, prompt_len), jnp.int32)
  history, success = [], False
  for step in range(1, steps + 1):
    pos_B = rng.integers(0, prompt_len, batch_size).astype(np.int32)
    pick_B = rng.integers(0, top_k, batch_size).astype(np.int32)
    prompt_P, loss, before = _gcg_step(
      run.graphdef, params, prompt_P, target_T, switch, pos_B, pick_B, vocab_limit, top_k
    )
    if not history:
      history.append(float(before))
    history.append(float(loss))
    if step % check_every == 0 or step == steps:
      success = _emits(run, np.asarray(prompt_P), target_T, switch, params)
      if success:
        break
  return GCGResult(np.asarray(prompt_P), history, success, step)


def _check_target(run: Run, target_ids: Sequence[int]) -> np.ndarray:
  target_T = np.asarray(target_ids)
  if target_T.ndim != 1 or not target_T.size or not np.issubdtype(target_T.dtype, np.integer):
    raise ValueError(
      f"target_ids must be a non-empty 1-D sequence of token ids, got {target_ids!r}"
    )
  if target_T.min() < 0 or target_T.max() >= run.model_cfg.vocab_size:
    raise ValueError(
      f"target ids must be in [0, {run.model_cfg.vocab_size}), "
      f"got {target_T.min()}..{target_T.max()}"
    )
  return target_T.astype(np.int32)


def _one_row_switch(switch: Switch) -> Switch:
  """The switch as one row that broadcasts over any batch of candidate prompts."""
  if switch.exclude is not None and switch.exclude.ndim == 2 and switch.exclude.shape[0] != 1:
    raise ValueError(f"an attack targets one row; got exclude for {switch.exclude.shape[0]} rows")
  if switch.mode != "source":
    return switch
  ids = np.unique(np.asarray(switch.source_ids))
  if len(ids) != 1:
    raise ValueError(f"an attack targets one source; the switch has source ids {ids.tolist()}")
  return dataclasses.replace(switch, source_ids=jnp.full((1, 1), ids[0], jnp.uint32))


def _emits(run: Run, prompt_P: np.ndarray, target_T: np.ndarray, switch: Switch, params) -> bool:
  prefix = np.concatenate([[BOS_ID], prompt_P]).astype(np.int32)
  emitted = greedy_continuations(run, [prefix], len(target_T), fixed_switch(switch), params=params)
  return bool(np.array_equal(emitted[0], target_T))


Attack = Callable[[int], bool]


def adversarial_compression_ratio(
  run: Run,
  target_ids: Sequence[int],
  switch: Switch,
  *,
  start_len: int = 5,
  max_len: int | None = None,
  attack: Attack | None = None,
  **gcg_kwargs,
) -> dict:
  """ACR = len(target) / the shortest prompt that makes the model emit the target.

  `attack(prompt_len) -> success` defaults to `gcg` with `gcg_kwargs` (which
  must give `steps`). Lengths grow by x1.5 from `start_len` until one succeeds
  (or `max_len`, default len(target), fails), then a binary search between the
  longest failure and the shortest success finds the shortest. Like the
  paper's search, this assumes success is monotone in the prompt length.
  If nothing up to `max_len` succeeds, `found` is False and `acr` is
  len(target) / max_len, an upper bound: the shortest prompt, if any, is longer.
  `tried` maps every length attacked to its success, in order.
  """
  target_T = _check_target(run, target_ids)
  max_len = len(target_T) if max_len is None else max_len
  if attack is None:

    def attack(prompt_len: int) -> bool:
      return gcg(run, target_T, switch, prompt_len=prompt_len, **gcg_kwargs).success

  shortest, tried = shortest_prompt_len(attack, start_len, max_len)
  found = shortest is not None
  return {
    "acr": len(target_T) / (shortest if found else max_len),
    "prompt_len": shortest,
    "found": found,
    "tried": tried,
  }


def shortest_prompt_len(attack: Attack, start_len: int, max_len: int) -> tuple[int | None, dict]:
  """Grow-then-bisect search; (shortest successful length or None, {length: success})."""
  if not 1 <= start_len <= max_len:
    raise ValueError(
      f"need 1 <= start_len <= max_len, got start_len={start_len}, max_len={max_len}"
    )
  tried = {}
  failed, succeeded = 0, None  # longest known failure, shortest known success
  n = start_len
  while True:
    tried[n] = bool(attack(n))
    if tried[n]:
      succeeded = n
    else:
      failed = n
    if succeeded is None:
      if n == max_len:
        return None, tried
      n = min(max_len, max(n + 1, math.ceil(n * 1.5)))
    elif succeeded - failed <= 1:
      return succeeded, tried
    else:
      n = (failed + succeeded) // 2
