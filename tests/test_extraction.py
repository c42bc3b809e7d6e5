import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import small_config
from nullearn import extraction, inference, losses, train
from nullearn.data.records import Document
from nullearn.data.tokenizer import BOS_ID, EOS_ID
from nullearn.switch import Switch

MEMORISED = 2  # the run trains on the first two documents only, until it recites them


@pytest.fixture(scope="module")
def run(world, tokenizer, tmp_path_factory):
  c = small_config()
  c.train.update(dict(steps=120, lr=1e-2, log_every=1000))
  r = train.train(c, tmp_path_factory.mktemp("run"), world.documents[:MEMORISED], tokenizer)
  return inference.Run(r.setup.model_cfg, r.setup.graphdef, r.state.params, tokenizer, {})


def random_params(run):
  """An untrained model: every weight drawn at the init scale, placed like the trained ones."""
  rng = np.random.default_rng(0)
  return jax.tree.map(
    lambda x: jax.device_put(rng.normal(0, 0.02, x.shape).astype(x.dtype), x.sharding), run.params
  )


REFERENCE_LEN = 32


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, params, tokens_1xT, source_id):
  T = tokens_1xT.shape[1]
  return nnx.merge(graphdef, params)(
    tokens_1xT,
    jnp.ones((1, T), jnp.int32),
    jnp.arange(T)[None],
    Switch.sources(jnp.full((1, T), source_id, jnp.uint32)),
  )


def teacher_forced(run, tokens, source_id):
  """Reference: each position's argmax and the NLL of the token that follows it.

  The row is padded at the end with one segment throughout: causal attention
  alone keeps the padding out of earlier positions, unlike the decoder's
  segment masking. A continuation is greedy iff each of its tokens is the
  argmax after the ones before.
  """
  n = len(tokens) - 1
  padded_1xT = np.zeros((1, REFERENCE_LEN + 1), np.int32)
  padded_1xT[0, : len(tokens)] = tokens
  logits = _forward(run.graphdef, run.params, jnp.asarray(padded_1xT[:, :-1]), source_id)
  nll = losses.token_nll(logits, jnp.asarray(padded_1xT[:, 1:]))
  return np.asarray(jnp.argmax(logits[0, :n], -1)), np.asarray(nll[0, :n])


def test_rouge_l_on_text_hand_computed():
  # LCS("a b c d e", "a c e f") = "a c e": P = 3/4, R = 3/5.
  p, r = 3 / 4, 3 / 5
  got = extraction.rouge_l("a b c d e", "a c e f")
  assert got["f1"] == pytest.approx(2 * p * r / (p + r)) and got["recall"] == pytest.approx(r)
  # Order matters: a reversal keeps one word in sequence.
  assert extraction.rouge_l("x y z", "z y x")["f1"] == pytest.approx(1 / 3)
  # Case and punctuation are dropped and words stemmed, as TOFU and MUSE score them.
  assert extraction.rouge_l("The ships sailed.", "the ship sails")["f1"] == 1.0
  assert extraction.rouge_l("one two", "three four five") == {"f1": 0.0, "recall": 0.0}
  assert extraction.rouge_l("", "one")["f1"] == 0.0


def test_greedy_continuations_are_the_argmax_at_every_step(run, world, tokenizer):
  docs = world.documents[:7]
  prefixes = [tokenizer.encode_document(d.text)[:n] for d, n in zip(docs, (5, 9, 2, 7, 9, 3, 6))]
  source_ids = [d.source_id for d in docs]
  # batch_size 6 splits seven rows into a full batch and a padded one.
  got = extraction.greedy_continuations(
    run, prefixes, 16, inference.per_token_switch(source_ids), batch_size=6
  )
  assert got.shape == (7, 16)
  for prefix, sid, row in zip(prefixes, source_ids, got):
    argmax, _ = teacher_forced(run, [*prefix, *row], sid)
    assert row.tolist() == argmax[len(prefix) - 1 :].tolist()


def test_greedy_continuations_rejects_bad_input(run):
  switch_for = inference.fixed_switch(Switch.backbone())
  with pytest.raises(ValueError, match="no prefixes"):
    extraction.greedy_continuations(run, [], 4, switch_for)
  with pytest.raises(ValueError, match="num_tokens"):
    extraction.greedy_continuations(run, [np.asarray([BOS_ID])], 0, switch_for)


def test_gcg_lowers_target_loss(run, world, tokenizer):
  doc = world.documents[0]
  target = tokenizer.encode_document(doc.text)[21:27]
  switch = Switch.sources([[doc.source_id]])
  result = extraction.gcg(
    run, target, switch, prompt_len=6, steps=10, top_k=16, batch_size=32, check_every=5
  )
  history = result.loss_history
  assert len(history) == result.steps_run + 1
  assert history[-1] < history[0] - 1.0
  assert all(b <= a for a, b in zip(history, history[1:]))
  assert result.prompt_ids.shape == (6,)
  assert result.prompt_ids.min() > EOS_ID and result.prompt_ids.max() < tokenizer.vocab_size
  argmax, nll = teacher_forced(run, [BOS_ID, *result.prompt_ids, *target], doc.source_id)
  assert history[-1] == pytest.approx(nll[-len(target) :].mean(), rel=1e-4, abs=1e-5)
  assert result.success == np.array_equal(argmax[-len(target) :], target)


def test_gcg_rejects_bad_arguments(run):
  target = [10, 11, 12]
  with pytest.raises(ValueError, match="one source"):
    extraction.gcg(run, target, Switch.sources([[1, 2]]), prompt_len=4, steps=1)
  with pytest.raises(ValueError, match="top_k"):
    extraction.gcg(run, target, Switch.backbone(), prompt_len=4, steps=1, top_k=512)
  with pytest.raises(ValueError, match="target ids"):
    extraction.gcg(run, [10, 512], Switch.backbone(), prompt_len=4, steps=1)
  with pytest.raises(ValueError, match="non-empty"):
    extraction.gcg(run, [], Switch.backbone(), prompt_len=4, steps=1)


@pytest.mark.parametrize("start_len", [5, 12, 7, 1])
def test_acr_search_finds_the_shortest_length(run, start_len):
  target = np.arange(4, 24)
  calls = []

  def attack(n):
    calls.append(n)
    return n >= 7

  out = extraction.adversarial_compression_ratio(
    run, target, Switch.backbone(), start_len=start_len, attack=attack
  )
  assert out["found"] and out["prompt_len"] == 7
  assert out["acr"] == pytest.approx(20 / 7)
  assert out["tried"][7] and not out["tried"][6]
  assert len(calls) == len(set(calls)) == len(out["tried"])


def test_acr_without_success_is_an_upper_bound(run):
  calls = []

  def attack(n):
    calls.append(n)
    return False

  out = extraction.adversarial_compression_ratio(
    run, np.arange(4, 24), Switch.backbone(), max_len=15, attack=attack
  )
  assert not out["found"] and out["prompt_len"] is None
  assert out["acr"] == pytest.approx(20 / 15)
  assert calls == sorted(calls) and calls[-1] == 15
  with pytest.raises(ValueError, match="start_len"):
    extraction.adversarial_compression_ratio(
      run, np.arange(4, 24), Switch.backbone(), start_len=30, attack=attack
    )


def test_acr_runs_gcg_by_default(run, monkeypatch):
  seen = []

  def fake_gcg(run_, target_ids, switch, *, prompt_len, **kwargs):
    seen.append((prompt_len, kwargs))
    return extraction.GCGResult(np.zeros(prompt_len, np.int32), [0.0], prompt_len >= 3, 1)

  monkeypatch.setattr(extraction, "gcg", fake_gcg)
  out = extraction.adversarial_compression_ratio(
    run, [5, 6, 7, 8, 9, 10], Switch.backbone(), steps=3, top_k=8
  )
  assert out["prompt_len"] == 3 and out["acr"] == pytest.approx(2.0)
  assert all(kwargs == dict(steps=3, top_k=8) for _, kwargs in seen)


def test_verbatim_extraction_recites_trained_documents(run, world):
  docs = [*world.documents[:6], Document(999, "short", "Too short.")]
  switch_for = inference.per_token_switch([d.source_id for d in docs])
  kwargs = dict(prefix_tokens=8, continuation_tokens=16)
  trained = extraction.verbatim_extraction(run, docs, switch_for, **kwargs)
  untrained = extraction.verbatim_extraction(
    run, docs, switch_for, params=random_params(run), **kwargs
  )
  for out in (trained, untrained):
    assert 0.0 <= out["exact_match"] <= 1.0 and 0.0 <= out["rouge_l"] <= 1.0
    assert out["num_samples"] == 6 and out["skipped"] == 1
    assert [s["source_id"] for s in out["samples"]] == [d.source_id for d in docs[:6]]
    assert out["rouge_l"] == pytest.approx(np.mean([s["rouge_l"] for s in out["samples"]]))
    assert out["rouge_l_recall"] == pytest.approx(
      np.mean([s["rouge_l_recall"] for s in out["samples"]])
    )
    for s in out["samples"]:
      assert s["rouge_l"] == extraction.rouge_l(s["truth"], s["emitted"])["f1"]
  recited = [s["rouge_l"] for s in trained["samples"][:MEMORISED]]
  unseen = [s["rouge_l"] for s in trained["samples"][MEMORISED:]]
  assert min(recited) > 0.9 > max(unseen)
  assert trained["rouge_l"] > untrained["rouge_l"] + 0.2
  assert trained["exact_match"] >= MEMORISED / 6 > untrained["exact_match"]


def test_verbatim_extraction_limits_and_errors(run, world):
  docs = world.documents[5:]
  switch_for = inference.per_token_switch([d.source_id for d in docs])
  out = extraction.verbatim_extraction(
    run, docs, switch_for, prefix_tokens=8, continuation_tokens=16, max_samples=6
  )
  assert [s["doc_index"] for s in out["samples"]] == list(range(6))
  assert [s["source_id"] for s in out["samples"]] == [d.source_id for d in docs[:6]]
  with pytest.raises(ValueError, match="no document"):
    extraction.verbatim_extraction(run, docs, switch_for, prefix_tokens=4, continuation_tokens=1000)
