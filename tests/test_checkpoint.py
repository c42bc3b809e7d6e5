"""Preemption, corrupt checkpoints and two-process training, in real subprocesses."""

import os
import pathlib
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import small_config
from nullearn import checkpoint, sharding, train
from nullearn.data import pipeline

WORKER = pathlib.Path(__file__).parent / "train_worker.py"


@pytest.fixture
def tokenizer_path(tokenizer, tmp_path):
  path = tmp_path / "tokenizer.model"
  tokenizer.save(path)
  return path


def worker(*args, **kw):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.Popen(
    [sys.executable, str(WORKER), *map(str, args)],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    **kw,
  )


def test_sigterm_writes_a_final_checkpoint(tmp_path, tokenizer_path):
  proc = worker(tmp_path / "run", tokenizer_path, 100_000)
  lines = []
  for line in proc.stdout:  # wait until training is under way
    lines.append(line)
    if "[step 3]" in line:
      proc.send_signal(signal.SIGTERM)
      break
  out = "".join(lines) + proc.communicate(timeout=120)[0]
  assert proc.returncode == 0, out
  assert "SIGTERM: saved checkpoint" in out, out
  done = [l for l in out.splitlines() if l.startswith("done")][-1]
  step = int(done.split("step=")[1])
  assert "preempted=True" in done and 3 <= step < 100_000
  assert checkpoint.Checkpointer(tmp_path / "run", async_save=False).latest_step() == step


def corrupt(step_dir: pathlib.Path):
  for f in pathlib.Path(step_dir, "params").rglob("*"):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(b"\0" * 7)


def test_corrupt_checkpoint_falls_back_to_the_last_good_one(world, tokenizer, tmp_path, capsys):
  c = small_config()
  c.train.update(dict(steps=12, checkpoint_every=4))
  train.train(c, tmp_path, world.documents, tokenizer, stop_after=8)
  ckpt = checkpoint.Checkpointer(tmp_path, async_save=False)
  assert ckpt.all_steps() == [4, 8]
  corrupt(ckpt.directory / "8")
  resumed = train.train(c, tmp_path, world.documents, tokenizer, stop_after=10)
  out = capsys.readouterr().out
  assert "checkpoints/8 is corrupt or partial" in out and "resuming from" in out
  assert resumed.history[0]["step"] == 5  # went on from step 4, the last good one
  kept = list(pathlib.Path(ckpt.directory).glob("corrupt-8-*"))
  assert len(kept) == 1, "the bad checkpoint is moved aside, not deleted"
  ckpt = checkpoint.Checkpointer(tmp_path, async_save=False)
  assert ckpt.latest_step() == 10
  for step in ckpt.all_steps():
    corrupt(ckpt.directory / str(step))
  with pytest.raises(checkpoint.CorruptCheckpointError, match="no checkpoint could be restored"):
    train.train(c, tmp_path, world.documents, tokenizer)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # ~45 s; test_startup trains on two processes in the default suite
def test_two_processes_train_the_model_one_process_would(
  world, tokenizer, tmp_path, tokenizer_path
):
  steps, port = 4, free_port()
  procs = [worker(tmp_path / "mp", tokenizer_path, steps, pid, 2, port) for pid in (0, 1)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out
  read = [set(np.load(tmp_path / "mp" / f"read_{i}.npy").tolist()) for i in (0, 1)]
  assert read[0] and read[1] and not read[0] & read[1], "each process reads its own share"
  got = np.load(tmp_path / "mp" / "params.npz")
  # One process, the same 4-device mesh, each global batch assembled from both shares.
  c = small_config()
  c.train.steps = steps
  c.mesh.update(dict(data=2, fsdp=2, tensor=1))
  mesh = sharding.make_mesh(2, 2, 1)
  shares = [
    iter(pipeline.make_dataset(c, world.documents, tokenizer, shard_index=i, shard_count=2))
    for i in (0, 1)
  ]
  setup = train.make_setup(c, steps, mesh)
  state, step = train.init_state(setup), train.make_train_step(setup)
  with jax.set_mesh(mesh):
    for _ in range(steps):
      parts = [next(s) for s in shares]
      batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
      state, _ = step(state, train.device_batch(batch, mesh))
  want = jax.tree.leaves(jax.device_get(state.params))
  assert len(got.files) == len(want)
  for i, w in enumerate(want):
    np.testing.assert_allclose(got[f"arr_{i}"], w, rtol=2e-4, atol=2e-6)


def test_ctrl_c_then_resume_in_a_new_process_is_exact_with_gathered_sinks(tmp_path):
  """`nullearn train` interrupted by SIGINT and started again equals one uninterrupted run."""
  from test_cli import SMALL, nullearn

  args = [
    *SMALL,
    "--config.model.sink_impl=gather",
    "--config.model.max_segments=4",
    "--config.train.steps=10",
    "--config.train.log_every=1",
  ]
  nullearn("train", f"--workdir={tmp_path / 'straight'}", *args, check_ok=True)
  env = {**os.environ, "XLA_FLAGS": ""}
  proc = subprocess.Popen(
    [sys.executable, "-m", "nullearn.cli", "train", f"--workdir={tmp_path / 'resumed'}", *args],
    cwd=pathlib.Path(__file__).parents[1],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if "[step 3]" in line:
      proc.send_signal(signal.SIGINT)
      break
  out = "".join(lines) + proc.communicate(timeout=120)[0]
  assert proc.returncode == 0, out
  assert "SIGINT: saved checkpoint at step" in out, out
  stopped = checkpoint.Checkpointer(tmp_path / "resumed", async_save=False).latest_step()
  assert 3 <= stopped < 10
  resumed = nullearn("train", f"--workdir={tmp_path / 'resumed'}", *args, check_ok=True)
  assert f"resuming from checkpoint {tmp_path / 'resumed'}/checkpoints/{stopped}" in resumed.stdout
  from nullearn import inference

  a, b = (inference.load_run(tmp_path / n) for n in ("straight", "resumed"))
  assert a.model_cfg.sink_impl == "gather"
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("saved_on,loaded_on", [(8, 1), (1, 8)])
def test_a_checkpoint_loads_on_another_topology(tmp_path, tokenizer_path, saved_on, loaded_on):
  """A pod's checkpoint in a 1-device Colab, and back: load_run places the parameters here."""
  script = pathlib.Path(__file__).parent / "portable_worker.py"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  outs = []
  for devices, args in (
    (saved_on, ["save", tmp_path, tokenizer_path]),
    (loaded_on, ["load", tmp_path]),
  ):
    out = subprocess.run(
      [sys.executable, str(script), str(devices), *map(str, args)],
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    outs.append(out.stdout)
  assert f"saved from {saved_on} devices" in outs[0], outs[0]
  assert "loaded onto {CpuDevice(id=0)}" in outs[1], outs[1]
  saved = np.load(tmp_path / f"logits_save_{saved_on}.npy")
  loaded = np.load(tmp_path / f"logits_load_{loaded_on}.npy")
  np.testing.assert_allclose(loaded, saved, rtol=1e-5, atol=1e-5)
