"""`nullearn train --dry_run`: the plan of a run on a mesh that is not here.

Builds the abstract model and optimizer state on the pod's mesh, so a 1B config
can be checked on a laptop without allocating anything: parameter count, bytes
per device, FLOPs (executed and dense-equivalent), expected throughput, the
forgetting budget of its sink geometry and, on a mesh of faked CPU devices, the
train step compiled for one device's shard with XLA's memory analysis of it
against the chip's HBM. That analysis is XLA:CPU's buffer assignment of the
same partitioned program; the TPU compiler fuses and lays out differently, so
take it as an estimate of the order, not the byte.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections

from nullearn import flops, sharding, train
from nullearn.data import pipeline

_BATCH_DTYPES = {
  "inputs": jnp.int32,
  "targets": jnp.int32,
  "weights": jnp.float32,
  "segment_ids": jnp.int32,
  "positions": jnp.int32,
  "source_ids": jnp.uint32,
}
FORGET_FRACTIONS = (0.01, 0.1, 0.5)


def fake_devices(num_devices: int) -> None:
  """Asks XLA for `num_devices` CPU devices; effective only before JAX's first device query."""
  flags = [
    f
    for f in os.environ.get("XLA_FLAGS", "").split()
    if not f.startswith("--xla_force_host_platform_device_count=")
  ]
  os.environ["XLA_FLAGS"] = " ".join(
    flags + [f"--xla_force_host_platform_device_count={num_devices}"]
  )


def plan(config: ml_collections.ConfigDict, compile_memory: bool = True) -> dict:
  """Sizes and expected speed of `config` on `mesh.num_devices` chips of `mesh.chip`.

  `compile_memory` compiles the train step, which needs `mesh.num_devices` devices here
  (faked CPU ones: `fake_devices` before JAX starts).
  """
  num_devices = config.mesh.num_devices
  try:
    chip = flops.chip(config.mesh.chip)
  except ValueError as e:
    raise ValueError(f"mesh.chip: {e}") from None
  if compile_memory and jax.device_count() < num_devices:
    raise ValueError(
      f"mesh.num_devices: compiling for {num_devices} devices needs as many here, "
      f"found {jax.device_count()} (set XLA_FLAGS=--xla_force_host_platform_"
      f"device_count={num_devices} before JAX starts)"
    )
  mesh = (
    sharding.make_mesh(
      config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=jax.devices()[:num_devices]
    )
    if compile_memory
    else sharding.abstract_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, num_devices)
  )
  steps = config.train.steps if config.train.steps > 0 else 1
  setup = train.make_setup(config, steps, mesh=mesh)
  shardings = setup.state_shardings
  params = sum(x.size for x in jax.tree.leaves(setup.abstract_state.params))
  per_device_params = sharding.per_device_bytes(setup.abstract_state.params, shardings.params)
  per_device_opt = sharding.per_device_bytes(setup.abstract_state.opt_state, shardings.opt_state)
  seq_len = config.data.seq_len
  executed = flops.train_flops_per_token(setup.model_cfg, seq_len)
  mfu = config.mesh.assumed_mfu
  tokens_per_sec = mfu * chip.peak_flops * num_devices / executed
  tokens_per_step = config.data.batch_size * seq_len
  geometry = setup.model_cfg.geometry
  out = {
    "mesh": dict(mesh.shape),
    "chip": chip.name,
    "devices": num_devices,
    "chip_peak_flops": chip.peak_flops,
    "chip_hbm_bytes": chip.hbm_bytes,
    "parameters": int(params),
    "per_device_param_bytes": per_device_params,
    "per_device_optimizer_bytes": per_device_opt,
    "sink_impl": setup.model_cfg.sink_impl,
    "mlp_columns": flops.mlp_columns(setup.model_cfg),
    "train_flops_per_token": executed,
    "dense_train_flops_per_token": flops.dense_train_flops_per_token(setup.model_cfg, seq_len),
    "assumed_mfu": mfu,
    "expected_tokens_per_sec": tokens_per_sec,
    "expected_tokens_per_sec_per_device": tokens_per_sec / num_devices,
    "tokens_per_step": tokens_per_step,
    "expected_step_seconds": tokens_per_step / tokens_per_sec,
    "steps": config.train.steps,
    "expected_hours": config.train.steps * tokens_per_step / tokens_per_sec / 3600,
    "forgetting_budget": {f: geometry.forgetting_budget(f) for f in FORGET_FRACTIONS},
  }
  if compile_memory:
    out["memory"] = compiled_memory(config, setup)
    out["fits"] = out["memory"]["peak"] <= chip.hbm_bytes
  return out


def compiled_memory(config: ml_collections.ConfigDict, setup: train.Setup) -> dict:
  """XLA's memory analysis of the train step compiled for one device's shard."""
  batch_sh = sharding.batch_sharding(setup.mesh)
  shape = (config.data.batch_size, config.data.seq_len)
  batch = {
    k: jax.ShapeDtypeStruct(shape, _BATCH_DTYPES[k], sharding=batch_sh) for k in pipeline.BATCH_KEYS
  }
  with jax.set_mesh(setup.mesh):
    stats = train.make_train_step(setup).lower(setup.abstract_state, batch).compile()
    stats = stats.memory_analysis()
  live = (
    stats.argument_size_in_bytes
    + stats.output_size_in_bytes
    - stats.alias_size_in_bytes
    + stats.temp_size_in_bytes
  )
  return {
    "backend": jax.default_backend(),
    "rows_per_device": batch_sh.shard_shape(shape)[0],
    "arguments": stats.argument_size_in_bytes,
    "outputs": stats.output_size_in_bytes,
    "aliased": stats.alias_size_in_bytes,
    "temporaries": stats.temp_size_in_bytes,
    "generated_code": stats.generated_code_size_in_bytes,
    # XLA's peak where the backend reports one, else every buffer live at once
    "peak": max(getattr(stats, "peak_memory_in_bytes", 0), live)
    + stats.generated_code_size_in_bytes,
  }


def format_plan(p: dict) -> str:
  gib = 2.0**30
  lines = [
    f"mesh {p['mesh']} on {p['devices']} x {p['chip']} "
    f"({p['chip_peak_flops'] / 1e12:.0f} TFLOP/s bf16, {p['chip_hbm_bytes'] / gib:.0f} GiB HBM)",
    f"parameters                 {p['parameters'] / 1e9:.3f} B",
    f"per device: parameters     {p['per_device_param_bytes'] / gib:.3f} GiB",
    f"per device: optimizer      {p['per_device_optimizer_bytes'] / gib:.3f} GiB",
    f"train FLOPs per token      {p['train_flops_per_token'] / 1e9:.2f} GFLOP executed "
    f"({p['sink_impl']}: {p['mlp_columns']:,} MLP columns a token), "
    f"{p['dense_train_flops_per_token'] / 1e9:.2f} GFLOP dense-equivalent",
    f"tokens per step            {p['tokens_per_step']:,}",
    f"expected at {p['assumed_mfu']:.0%} MFU     {p['expected_tokens_per_sec']:,.0f} tokens/s "
    f"({p['expected_tokens_per_sec_per_device']:,.0f} per device), "
    f"{p['expected_step_seconds']:.2f} s/step",
    f"{p['steps']:,} steps                  {p['expected_hours']:.1f} h",
    "forgetting budget          "
    + ", ".join(
      f"{n:,} sources remove {f:.0%} of the pool" for f, n in p["forgetting_budget"].items()
    ),
  ]
  if "memory" in p:
    m = p["memory"]
    lines += [
      f"compiled step per device   {m['rows_per_device']} rows; XLA:{m['backend']} memory "
      f"analysis: arguments {m['arguments'] / gib:.2f} GiB, outputs {m['outputs'] / gib:.2f} "
      f"GiB (aliased {m['aliased'] / gib:.2f}), temporaries {m['temporaries'] / gib:.2f} GiB, "
      f"generated code {m['generated_code'] / 2**20:.1f} MiB",
      f"peak per device            {m['peak'] / gib:.2f} GiB of {p['chip_hbm_bytes'] / gib:.0f}"
      f" GiB HBM: {'fits' if p['fits'] else 'DOES NOT FIT'}",
    ]
  return "\n".join(lines)
