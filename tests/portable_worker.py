"""Saves or loads a run on a given number of (fake CPU) devices: checkpoints across topologies.

python tests/portable_worker.py DEVICES save WORKDIR TOKENIZER   # train on a DEVICES-wide mesh
python tests/portable_worker.py DEVICES load WORKDIR OUT.npy    # load_run, logits of a row
"""

import os
import sys

from conftest import small_config

# conftest fakes 8 devices for the test process; this one has the count it is given.
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={sys.argv[1]}"


def row():
  import numpy as np

  tokens = (np.arange(24, dtype=np.int32) * 7 % 500 + 4)[None]
  seg = np.ones_like(tokens)
  return tokens, seg, np.arange(24, dtype=np.int32)[None], np.full_like(tokens, 5)


def main():
  import jax
  import numpy as np

  from nullearn import inference, train
  from nullearn.data import factworld
  from nullearn.data.tokenizer import Tokenizer
  from nullearn.switch import Switch

  devices, mode, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
  assert jax.device_count() == devices
  tokens, seg, pos, src = row()
  if mode == "save":
    c = small_config()
    c.train.steps = 3
    c.mesh.update(dict(data=1, fsdp=devices, tensor=1))
    world = factworld.generate(factworld.FactWorldConfig(num_sources=40, sources_per_group=4))
    tok = Tokenizer.load(sys.argv[4])
    result = train.train(c, workdir, world.documents, tok)
    tok.save(os.path.join(workdir, "tokenizer.model"))
    shards = {len(x.sharding.device_set) for x in jax.tree.leaves(result.state.params)}
    print(f"saved from {max(shards)} devices")
    run = inference.Run(result.setup.model_cfg, result.setup.graphdef, result.state.params, tok, {})
  else:
    run = inference.load_run(workdir)
    print(f"loaded onto {[x.sharding.device_set for x in jax.tree.leaves(run.params)][0]}")
  logits = run.model()(tokens, seg, pos, Switch.sources(src, exclude=[9]))
  np.save(os.path.join(workdir, f"logits_{mode}_{devices}.npy"), np.asarray(logits))


if __name__ == "__main__":
  main()
