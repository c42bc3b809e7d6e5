"""Logs meant for files: timestamped lines, and no progress bar unless stdout is a terminal."""

import io
import os
import re
import subprocess
import sys

from nullearn import writer as writer_lib

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


def test_train_into_a_file_has_timestamped_lines_and_no_bar(tmp_path):
  env = {
    **os.environ,
    "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    "JAX_PLATFORMS": "cpu",
  }
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "nullearn.cli",
      "train",
      "--config=configs/tiny.py",
      f"--workdir={tmp_path / 'run'}",
      "--config.train.steps=4",
      "--config.train.log_every=2",
      "--config.model.d_model=32",
      "--config.model.num_layers=1",
      "--config.model.pool=64",
      "--config.model.active=4",
      "--config.model.vocab_size=512",
      "--config.data.seq_len=32",
      "--config.data.batch_size=4",
      "--config.factworld.num_sources=40",
      "--config.factworld.sources_per_group=4",
    ],
    cwd=os.path.dirname(os.path.dirname(__file__)),
    env=env,
    capture_output=True,
    timeout=300,
    check=False,
  )  # bytes: text mode would turn a bar's "\r" into "\n"
  assert result.returncode == 0, result.stderr.decode()
  assert b"\r" not in result.stdout + result.stderr
  stdout = result.stdout.decode()
  lines = stdout.splitlines()
  assert lines and all(STAMP.match(line) for line in lines), stdout
  steps = [re.match(STAMP.pattern + r"\[step (\d+)\] .*loss=", line) for line in lines]
  assert [int(m.group(1)) for m in steps if m] == [2, 4], stdout


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_the_bar_is_for_terminals_and_every_line_is_stamped(monkeypatch):
  monkeypatch.setattr(sys, "stdout", io.StringIO())
  assert not writer_lib.MetricWriter(None).interactive
  monkeypatch.setattr(sys, "stdout", _Terminal())
  w = writer_lib.MetricWriter(None)
  assert w.interactive
  w.text("first\nsecond")
  w.write(3, {"loss": 1.5})
  lines = sys.stdout.getvalue().splitlines()
  assert [STAMP.sub("", line) for line in lines] == ["first", "second", "[step 3] loss=1.5000"]
  assert all(STAMP.match(line) for line in lines)
