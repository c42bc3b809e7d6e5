"""Exports of a run with its ledger applied for good.

`checkpoint`: a run directory `load_run` reads, whose weights hold zeros where
the ledgered sources' sinks were (every layer, each its own sinks), with the
ledger copied so its sources stay refused, and a collateral report: the sinks
removed and what the other sources lost with them.

`hf`: a fixed switch folded into the weights makes the NULL a standard Llama
(safetensors, config.json, the SentencePiece tokenizer as a LlamaTokenizer).
Conventions checked against transformers' Llama: our rotary embedding splits
the head dimension in halves (`rotate_half`), RMSNorm normalises in float32
before multiplying by its weight, SwiGLU is down(silu(gate(x)) * up(x)), and
attention scales by head_dim ** -0.5.
"""

from __future__ import annotations

import dataclasses
import json
import types
from typing import Any

import numpy as np
import safetensors.numpy
import sentencepiece as spm
from etils import epath

from nullearn import checkpoint as ckpt_lib
from nullearn import inference, scores, surgery
from nullearn import ledger as ledger_lib
from nullearn.data.records import Probe
from nullearn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from nullearn.inference import Run
from nullearn.masks import SinkGeometry
from nullearn.model import unstack_layers
from nullearn.results import Summary

SAMPLE = 100_000  # other sources sampled for the collateral report of a lazy corpus


def check_out(out: str | epath.PathLike) -> epath.Path:
  """An export never overwrites: `out` must be new or empty."""
  out = epath.Path(out)
  if out.exists() and any(out.iterdir()):
    raise ValueError(f"--out: {out} exists and is not empty; export into a new directory")
  return out


def _fresh(out: str | epath.PathLike) -> epath.Path:
  out = check_out(out)
  out.mkdir(parents=True, exist_ok=True)
  return out


def export_checkpoint(run: Run, out: str | epath.PathLike) -> epath.Path:
  """Writes `run` (its ledger applied) as a run directory; returns it."""
  out = _fresh(out)
  meta = dict(
    run.meta,
    export={"from": run.workdir, "step": run.step, "removed_sources": run.ledger.ids.tolist()},
  )
  ckpt = ckpt_lib.Checkpointer(out, keep=1, async_save=False)
  # No optimizer state: an export serves, it does not resume training.
  ckpt.save(
    run.step, types.SimpleNamespace(step=run.step, params=run.params, opt_state={}), None, meta
  )
  ckpt.close()
  run.tokenizer.save(out / "tokenizer.model")
  source = ledger_lib.path(run.workdir)
  if source.exists():
    ledger_lib.path(out).write_bytes(source.read_bytes())
  return out


def collateral(
  geometry: SinkGeometry,
  num_layers: int,
  ledger: ledger_lib.Ledger,
  others: np.ndarray,
  exact: bool,
  population: int,
) -> dict[str, Any]:
  """The sinks removed and how many of their own sinks the `others` sources lost.

  With one mask for every layer, layer 0 stands for all; with per-layer masks
  each layer's losses are counted and summed (out of active * layers). A sample
  is scaled to the corpus's `population` of sources.
  """
  layers = list(range(num_layers)) if geometry.per_layer_masks else [0]
  removed = {layer: surgery.removed_sinks(geometry, ledger.ids, layer) for layer in layers}
  lost_S = np.zeros(len(others), np.int64)
  for layer in layers:
    for i in range(0, len(others), surgery.CHUNK):
      own_xA = np.asarray(geometry.sinks(others[i : i + surgery.CHUNK].astype(np.uint32), layer))
      lost_S[i : i + surgery.CHUNK] += np.isin(own_xA, removed[layer]).sum(-1)
  total = geometry.active * len(layers)
  values, counts = np.unique(lost_S, return_counts=True)
  return {
    "removed_sources": [dataclasses.asdict(e) for e in ledger.entries],
    "geometry": geometry.to_dict(),
    "layers_counted": len(layers),
    "removed_sinks": {str(k): v.tolist() for k, v in removed.items()},
    "removed_fraction_of_pool": float(
      np.mean([len(v) for v in removed.values()]) / max(geometry.pool, 1)
    ),
    "other_sources": {"count": len(others), "exact": exact, "population": population},
    "own_sinks_per_source": total,
    "lost_histogram": {str(int(v)): int(c) for v, c in zip(values, counts)},
    "sources_losing_any": int(np.sum(lost_S > 0)),
    "fraction_losing_any": float(np.mean(lost_S > 0)) if len(others) else 0.0,
    "mean_fraction_lost": float(lost_S.mean() / total) if len(others) else 0.0,
    "max_lost": int(lost_S.max(initial=0)),
  }


def others_of(
  ledger: ledger_lib.Ledger, names: dict[int, str] | None, seed: int = 0
) -> tuple[np.ndarray, bool]:
  """(the sources that are not forgotten, exact?): every one of an in-memory corpus, else
  SAMPLE random ids. A source's sinks are a pseudo-random function of its id, so random
  ids lose what the corpus's own ids lose, in distribution."""
  if names is not None:
    ids = np.asarray(sorted(names), np.int64)
    return ids[~np.isin(ids, ledger.ids)], True
  ids = np.unique(np.random.default_rng(seed).integers(0, 2**32, SAMPLE))
  return ids[~np.isin(ids, ledger.ids)], False


def retained_truth_ratios(before: Run, after: Run, probes: list[Probe]) -> dict[str, Summary]:
  """Retained probes' Truth Ratios with their own sinks on, before and after the removal."""
  own = [p.source_id for p in probes]
  return {
    name: Summary.of(
      scores.truth_ratio(inference.option_nll(run, probes, inference.per_token_switch(own)))
    )
    for name, run in (("before", before), ("after", after))
  }


def write_collateral(report: dict[str, Any], out: epath.Path) -> list[epath.Path]:
  (out / "collateral.json").write_text(json.dumps(report, indent=1, default=_jsonable))
  (out / "collateral.md").write_text(collateral_markdown(report))
  return [out / "collateral.json", out / "collateral.md"]


def _jsonable(o):
  if isinstance(o, Summary):
    return dataclasses.asdict(o)
  raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def collateral_markdown(r: dict[str, Any]) -> str:
  g = r["geometry"]
  removed = r["removed_sources"]
  lines = [
    "# Hard delete: collateral",
    "",
    f"Removed {len(removed)} source(s): "
    + ", ".join(f"{e['id']} ({e['name']})" for e in removed[:20])
    + (" …" if len(removed) > 20 else ""),
    "",
    f"Sinks zeroed: {r['removed_fraction_of_pool']:.1%} of the pool of {g['pool']} "
    f"({'per layer' if g['per_layer_masks'] else 'the same in every layer'}).",
    "",
    f"Other sources ({r['other_sources']['count']:,}, "
    f"{'every one' if r['other_sources']['exact'] else 'random ids, standing for the '}"
    f"{'' if r['other_sources']['exact'] else format(r['other_sources']['population'], ',')}"
    f"{'' if r['other_sources']['exact'] else ' of the corpus'}): "
    f"{r['sources_losing_any']:,} ({r['fraction_losing_any']:.1%}) lost at least one of "
    f"their {r['own_sinks_per_source']} own sinks; on average "
    f"{r['mean_fraction_lost']:.2%}, at most {r['max_lost']}.",
    "",
    "| own sinks lost | sources |",
    "|---|---|",
  ]
  lines += [f"| {k} | {v:,} |" for k, v in r["lost_histogram"].items()]
  if r.get("retained_probes"):
    b, a = r["retained_probes"]["before"], r["retained_probes"]["after"]
    lines += [
      "",
      f"Retained probes ({b.n}), own sinks on: median Truth Ratio {b.median:.2f} "
      f"before, {a.median:.2f} after; fraction > 1 {b.frac_above_1:.2f} before, "
      f"{a.frac_above_1:.2f} after.",
    ]
  return "\n".join(lines) + "\n"


def export_hf(run: Run, out: str | epath.PathLike, switch: str) -> epath.Path:
  """Writes `run` with `switch` ("backbone" or "expected", the ledger's sinks already zero)
  folded in as a transformers Llama checkpoint; returns the directory."""
  cfg, geometry = run.model_cfg, run.model_cfg.geometry
  mlps = {
    layer: surgery.fold_switch(mlp, geometry, switch)
    for layer, mlp in surgery.mlp_layers(run.params)
  }  # validates `switch` first
  out = _fresh(out)
  D, H, G, K = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  f32 = lambda x: np.asarray(x, np.float32)
  t = {
    "model.embed_tokens.weight": f32(run.params["embed"]),
    "model.norm.weight": f32(run.params["final_norm"]["scale"]),
  }
  for layer, block in sorted(unstack_layers(run.params)["blocks"].items()):
    p, a = f"model.layers.{layer}.", block["attn"]
    t[p + "self_attn.q_proj.weight"] = f32(a["wq"]).reshape(D, H * K).T
    t[p + "self_attn.k_proj.weight"] = f32(a["wk"]).reshape(D, G * K).T
    t[p + "self_attn.v_proj.weight"] = f32(a["wv"]).reshape(D, G * K).T
    t[p + "self_attn.o_proj.weight"] = f32(a["wo"]).reshape(H * K, D).T
    t[p + "input_layernorm.weight"] = f32(block["attn_norm"]["scale"])
    t[p + "post_attention_layernorm.weight"] = f32(block["mlp_norm"]["scale"])
    t[p + "mlp.gate_proj.weight"] = mlps[layer]["w_gate"].T
    t[p + "mlp.up_proj.weight"] = mlps[layer]["w_up"].T
    t[p + "mlp.down_proj.weight"] = mlps[layer]["w_down"].T
  # Written even when tied (the same values): transformers' Flax Llama never ties.
  t["lm_head.weight"] = (
    t["model.embed_tokens.weight"] if cfg.tie_embeddings else f32(run.params["unembed"]).T
  )
  safetensors.numpy.save_file(
    {k: np.ascontiguousarray(v) for k, v in t.items()},
    str(out / "model.safetensors"),
    metadata={"format": "pt"},
  )
  width = mlps[0]["w_gate"].shape[1]
  provenance = {
    "from": run.workdir,
    "step": run.step,
    "switch": switch,
    "removed_sources": run.ledger.ids.tolist(),
    "sink_geometry": geometry.to_dict(),
  }
  (out / "config.json").write_text(json.dumps(llama_config(run, width, provenance), indent=1))
  _write_tokenizer(run, out)
  return out


def llama_config(run: Run, intermediate_size: int, provenance: dict) -> dict[str, Any]:
  cfg = run.model_cfg
  return {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": cfg.vocab_size,
    "hidden_size": cfg.d_model,
    "intermediate_size": intermediate_size,
    "num_hidden_layers": cfg.num_layers,
    "num_attention_heads": cfg.num_heads,
    "num_key_value_heads": cfg.num_kv_heads,
    "head_dim": cfg.head_dim,
    "hidden_act": "silu",
    "max_position_embeddings": run.context,
    "rms_norm_eps": cfg.norm_eps,
    "rope_theta": cfg.rope_base,
    "rope_scaling": None,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "mlp_bias": False,
    "tie_word_embeddings": cfg.tie_embeddings,
    "initializer_range": cfg.init_std,
    "bos_token_id": BOS_ID,
    "eos_token_id": EOS_ID,
    "pad_token_id": PAD_ID,
    "torch_dtype": "float32",
    "use_cache": True,
    "nullearn": provenance,
  }


def _write_tokenizer(run: Run, out: epath.Path) -> None:
  """The SentencePiece model as a LlamaTokenizer: BOS added, no EOS, text encoded as is."""
  sp = spm.SentencePieceProcessor(model_proto=run.tokenizer.model_proto)
  special = {
    "bos_token": sp.id_to_piece(BOS_ID),
    "eos_token": sp.id_to_piece(EOS_ID),
    "unk_token": sp.id_to_piece(UNK_ID),
    "pad_token": sp.id_to_piece(PAD_ID),
  }
  run.tokenizer.save(out / "tokenizer.model")
  (out / "special_tokens_map.json").write_text(json.dumps(special, indent=1))
  (out / "tokenizer_config.json").write_text(
    json.dumps(
      dict(
        special,
        tokenizer_class="LlamaTokenizer",
        add_bos_token=True,
        add_eos_token=False,
        legacy=True,
        model_max_length=run.context,
        clean_up_tokenization_spaces=False,
        sp_model_kwargs={},
      ),
      indent=1,
    )
  )
  (out / "generation_config.json").write_text(
    json.dumps({"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}, indent=1)
  )
