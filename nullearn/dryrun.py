"""`nullearn train --dry_run`: the plan of a run on a mesh that is not here.

Builds the abstract model and optimizer state on an abstract mesh of the pod's
shape, so a 1B config can be checked (parameter count, bytes per device, FLOPs,
expected throughput) on a laptop without allocating anything.
"""

from __future__ import annotations

import jax
import ml_collections

from nullearn import flops, sharding, train


def plan(config: ml_collections.ConfigDict) -> dict:
  """Sizes and expected speed of `config` on `mesh.num_devices` chips of `mesh.chip`."""
  num_devices = config.mesh.num_devices
  mesh = sharding.abstract_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor,
                                num_devices)
  steps = config.train.steps if config.train.steps > 0 else 1
  setup = train.make_setup(config, steps, mesh=mesh)
  shardings = setup.state_shardings
  params = sum(x.size for x in jax.tree.leaves(setup.abstract_state.params))
  per_device_params = sharding.per_device_bytes(setup.abstract_state.params, shardings.params)
  per_device_opt = sharding.per_device_bytes(setup.abstract_state.opt_state, shardings.opt_state)
  seq_len = config.data.seq_len
  flops_per_token = flops.train_flops_per_token(setup.model_cfg, seq_len)
  peak = dict(flops.PEAK_FLOPS).get(config.mesh.chip.lower())
  if peak is None:
    known = [n for n, _ in flops.PEAK_FLOPS]
    raise ValueError(f"mesh.chip: unknown chip {config.mesh.chip!r}; known: {known}")
  mfu = config.mesh.assumed_mfu
  tokens_per_sec = mfu * peak * num_devices / flops_per_token
  tokens_per_step = config.data.batch_size * seq_len
  return {
      "mesh": dict(mesh.shape), "chip": config.mesh.chip, "devices": num_devices,
      "parameters": int(params),
      "per_device_param_bytes": per_device_params,
      "per_device_optimizer_bytes": per_device_opt,
      "train_flops_per_token": flops_per_token,
      "assumed_mfu": mfu, "expected_tokens_per_sec": tokens_per_sec,
      "expected_tokens_per_sec_per_device": tokens_per_sec / num_devices,
      "tokens_per_step": tokens_per_step,
      "expected_step_seconds": tokens_per_step / tokens_per_sec,
      "steps": config.train.steps,
      "expected_hours": config.train.steps * tokens_per_step / tokens_per_sec / 3600,
  }


def format_plan(p: dict) -> str:
  gib = 2.0**30
  return "\n".join([
      f"mesh {p['mesh']} on {p['devices']} x {p['chip']}",
      f"parameters                 {p['parameters'] / 1e9:.3f} B",
      f"per device: parameters     {p['per_device_param_bytes'] / gib:.3f} GiB",
      f"per device: optimizer      {p['per_device_optimizer_bytes'] / gib:.3f} GiB",
      f"train FLOPs per token      {p['train_flops_per_token'] / 1e9:.2f} GFLOP",
      f"tokens per step            {p['tokens_per_step']:,}",
      f"expected at {p['assumed_mfu']:.0%} MFU     {p['expected_tokens_per_sec']:,.0f} tokens/s "
      f"({p['expected_tokens_per_sec_per_device']:,.0f} per device), "
      f"{p['expected_step_seconds']:.2f} s/step",
      f"{p['steps']:,} steps                  {p['expected_hours']:.1f} h",
  ])
