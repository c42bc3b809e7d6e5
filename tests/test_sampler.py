import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_model
from nullearn import ledger as ledger_lib
from nullearn import sampler
from nullearn.model import Transformer
from nullearn.switch import Switch

# A wide init spreads the logits, so that greedy choices are not float-rounding ties.
CFG = tiny_model(init_std=0.3)
PROMPTS = [
  np.asarray(p, np.int32)
  for p in ([1, 9, 22, 5, 31, 7], [1, 40], [1, 12, 3, 50, 8, 8, 19, 27, 4], [1])
]
# Each row its own switch: its own source, a routed one, exclusions of its own or none.
SWITCHES = [
  Switch.sources(7),
  Switch.sources(123, exclude=[7, 9]),
  Switch.sources(7, exclude=[5]),
  Switch.sources(2**31 + 5),
]
BUFFER = 32


def model_for(**overrides):
  cfg = dataclasses.replace(CFG, **overrides)
  return nnx.split(Transformer(cfg, nnx.Rngs(0)))


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, params, tokens_1xT, switch):
  """Reference forward: one row from slot 0, right-padded; causal attention keeps the padding
  out of every earlier position."""
  T = tokens_1xT.shape[1]
  return nnx.merge(graphdef, params)(
    tokens_1xT, jnp.ones((1, T), jnp.int32), jnp.arange(T)[None], switch
  )[0]


def uncached(graphdef, params, prompt, switch, n, eos_id=None):
  """Greedy decoding by recomputing the whole row for every new token."""
  row = list(prompt)
  for _ in range(n):
    buf = np.zeros((1, BUFFER), np.int32)
    buf[0, : len(row)] = row
    nxt = int(jnp.argmax(_logits(graphdef, params, jnp.asarray(buf), switch)[len(row) - 1]))
    if nxt == eos_id:
      break
    row.append(nxt)
  return row[len(prompt) :]


@pytest.mark.parametrize(
  "overrides",
  [
    dict(),
    dict(per_layer_masks=True, sink_impl="gather", num_kv_heads=1),
    dict(per_layer_masks=True, num_kv_heads=4),
    dict(pool=0, backbone=72),
    dict(scan_layers=True, per_layer_masks=True),
  ],
)
def test_cached_greedy_equals_recomputing_every_token(overrides):
  graphdef, params = model_for(**overrides)
  got = sampler.sample(graphdef, params, PROMPTS, SWITCHES, 12, eos_id=None)
  assert got.tokens.shape == (4, 12) and got.lengths.tolist() == [12] * 4
  for prompt, switch, row in zip(PROMPTS, SWITCHES, got.tokens):
    assert row.tolist() == uncached(graphdef, params, prompt, switch, 12)


def test_one_batched_switch_equals_per_row_switches():
  graphdef, params = model_for()
  batched = Switch.sources([[7], [123], [7], [2**31 + 5]], exclude=[[7, 9], [7, 9], [5, 5], [5, 5]])
  per_row = [
    Switch.sources(7, exclude=[7, 9]),
    Switch.sources(123, exclude=[9, 7]),
    Switch.sources(7, exclude=[5]),
    Switch.sources(2**31 + 5, exclude=[5]),
  ]
  a = sampler.sample(graphdef, params, PROMPTS, batched, 8, eos_id=None).tokens
  b = sampler.sample(graphdef, params, PROMPTS, per_row, 8, eos_id=None).tokens
  np.testing.assert_array_equal(a, b)
  mixed = [Switch.backbone(), Switch.sources(123), Switch.expected(exclude=[7]), Switch.sources(7)]
  got = sampler.sample(graphdef, params, PROMPTS, mixed, 8, eos_id=None).tokens
  for prompt, switch, row in zip(PROMPTS, mixed, got):
    assert row.tolist() == uncached(graphdef, params, prompt, switch, 8)


def test_eos_stops_each_row_on_its_own():
  graphdef, params = model_for()
  free = sampler.sample(graphdef, params, PROMPTS, SWITCHES, 12, eos_id=None).tokens
  first = lambda row, token: row.tolist().index(token) if token in row else 12
  # The token whose first appearances end the rows at the most different lengths.
  eos = max(np.unique(free).tolist(), key=lambda t: len({first(row, t) for row in free}))
  got = sampler.sample(graphdef, params, PROMPTS, SWITCHES, 12, eos_id=eos)
  assert got.lengths.tolist() == [first(row, eos) for row in free]
  assert len(set(got.lengths.tolist())) >= 3
  for row, out, n in zip(free, got.tokens, got.lengths):
    assert out[:n].tolist() == row[:n].tolist() and not out[n:].any()
  for prompt, switch, out, n in zip(PROMPTS, SWITCHES, got.tokens, got.lengths):
    assert out[:n].tolist() == uncached(graphdef, params, prompt, switch, 12, eos_id=eos)


def test_sampling_is_reproducible_and_top_k_1_is_greedy():
  graphdef, params = model_for()
  draw = lambda **kw: (
    sampler.sample(
      graphdef, params, PROMPTS, SWITCHES, 12, eos_id=None, sampling=sampler.Sampling(**kw)
    ).tokens
  )
  greedy = draw()
  a, b = draw(temperature=1.0, seed=3), draw(temperature=1.0, seed=3)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, draw(temperature=1.0, seed=4))
  assert not np.array_equal(a, greedy)
  np.testing.assert_array_equal(draw(temperature=1.0, top_k=1, seed=3), greedy)
  np.testing.assert_array_equal(draw(temperature=2.0, top_p=1e-6, seed=3), greedy)


@pytest.mark.parametrize("cut", [dict(top_k=3), dict(top_p=0.3)])
def test_sampled_tokens_stay_inside_the_cut(cut):
  graphdef, params = model_for()
  got = sampler.sample(
    graphdef,
    params,
    PROMPTS,
    SWITCHES,
    12,
    eos_id=None,
    sampling=sampler.Sampling(temperature=1.5, seed=1, **cut),
  ).tokens
  for prompt, switch, row in zip(PROMPTS, SWITCHES, got):
    buf = np.zeros((1, BUFFER), np.int32)
    buf[0, : len(prompt) + 12] = [*prompt, *row]
    logits = np.asarray(_logits(graphdef, params, jnp.asarray(buf), switch))
    for i, token in enumerate(row):
      x = logits[len(prompt) - 1 + i] / 1.5
      rank = int((x > x[token]).sum())
      if "top_k" in cut:
        assert rank < cut["top_k"]
      else:
        p = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
        assert np.sort(p)[::-1][:rank].sum() < cut["top_p"]


def test_a_ledgered_source_is_refused():
  graphdef, params = model_for()
  entry = ledger_lib.Entry(123, "Some Source", "takedown", "2026-01-01T00:00:00Z", "u")
  ledger = ledger_lib.Ledger((entry,))
  for switch in (SWITCHES, Switch.sources([[7], [123], [7], [5]])):
    with pytest.raises(ledger_lib.ForgottenSourceError, match="source 123"):
      sampler.sample(graphdef, params, PROMPTS, switch, 4, ledger=ledger)
  ok = sampler.sample(graphdef, params, PROMPTS, [Switch.sources(7)] * 4, 4, ledger=ledger)
  assert ok.tokens.shape == (4, 4)


def test_bad_requests():
  graphdef, params = model_for()
  with pytest.raises(ValueError, match="--temperature: must be >= 0"):
    sampler.Sampling(temperature=-1)
  with pytest.raises(ValueError, match=r"--top_p: must be in \(0, 1\]"):
    sampler.Sampling(top_p=0)
  with pytest.raises(ValueError, match="--top_k: must be >= 0"):
    sampler.Sampling(top_k=-2)
  with pytest.raises(ValueError, match="--max_new_tokens: must be at least 1"):
    sampler.sample(graphdef, params, PROMPTS, SWITCHES, 0)
  with pytest.raises(ValueError, match="3 switches for 4 prompts"):
    sampler.sample(graphdef, params, PROMPTS, SWITCHES[:3], 4)
  with pytest.raises(ValueError, match="one source id per row, not per token"):
    sampler.sample(graphdef, params, PROMPTS[:1], Switch.sources([[1, 2]]), 4)
