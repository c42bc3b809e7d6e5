"""Multi-host start-up: one JAX process per host, all training one model."""

from __future__ import annotations

import jax


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """`jax.distributed.initialize`; on TPU VMs every argument comes from the environment.

  CPU processes (tests, a workstation) talk through gloo collectives; the
  setting is ignored by TPU and GPU backends.
  """
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
  )
