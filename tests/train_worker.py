"""A training process for the tests: SIGTERM handling and two-process training.

python tests/train_worker.py WORKDIR TOKENIZER STEPS [PROCESS_ID NUM_PROCESSES PORT]
"""

import os
import sys

from conftest import small_config

# conftest fakes 8 devices; a process here has 1, or 2 when it is one of two.
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + (
  "2" if len(sys.argv) > 4 else "1"
)


def main():
  workdir, tokenizer_path, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
  if len(sys.argv) > 4:
    from nullearn import distributed

    pid, count, port = (int(a) for a in sys.argv[4:7])
    distributed.initialize(f"localhost:{port}", count, pid)
  import jax
  import numpy as np
  from jax.experimental import multihost_utils

  from nullearn import train
  from nullearn.data import factworld, pipeline
  from nullearn.data.tokenizer import Tokenizer

  c = small_config()
  c.train.steps = steps
  c.train.log_every = 1
  c.mesh.update(
    dict(data=2, fsdp=-1, tensor=1) if jax.process_count() > 1 else dict(data=1, fsdp=1, tensor=1)
  )
  world = factworld.generate(factworld.FactWorldConfig(num_sources=40, sources_per_group=4))
  result = train.train(c, workdir, world.documents, Tokenizer.load(tokenizer_path))
  if jax.process_count() > 1:  # what this process read: its share of every global batch
    it = iter(pipeline.make_dataset(c, world.documents, Tokenizer.load(tokenizer_path)))
    read = sorted(
      {
        int(s)
        for _ in range(steps)
        for b in [next(it)]
        for s in b["source_ids"][b["segment_ids"] > 0]
      }
    )
    np.save(os.path.join(workdir, f"read_{jax.process_index()}.npy"), np.asarray(read))
  params = jax.tree.map(
    np.asarray, jax.device_get(multihost_utils.process_allgather(result.state.params, tiled=True))
  )
  if jax.process_index() == 0:
    np.savez(os.path.join(workdir, "params.npz"), *jax.tree.leaves(params))
  print(f"done preempted={result.preempted} step={int(result.state.step)}", flush=True)


if __name__ == "__main__":
  main()
