"""The TPU pod launch scripts: syntax, usage, and the exact commands they run.

No network and no gcloud: DRY_RUN=1 prints the commands, a fake `gcloud` records
what a real run would call, and the workers' side runs here under a fake trainer.
"""

import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import tarfile
import time

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[1] / "launch"
SCRIPTS = ("create.sh", "setup.sh", "train.sh", "follow.sh", "stop.sh", "delete.sh")
TEST_ENV = {"TPU_NAME": "test-pod", "ZONE": "us-test1-a", "ACCELERATOR_TYPE": "v4-16",
            "PROJECT": "test-project", "GCS_BUCKET": "test-bucket", "RUN_NAME": "run1"}
GCLOUD_TPU = ["gcloud", "compute", "tpus", "tpu-vm"]
AWKWARD_ARGS = ("--config.train.steps=7", "--config.data.corpus=my docs/it's.jsonl", "$HOME;x")

# Stands in for `nullearn train` on a worker: logs its arguments, saves on SIGTERM.
FAKE_TRAINER = """#!/usr/bin/env bash
printf 'arg: %s\\n' "$@"
echo "TFDS_DATA_DIR=$TFDS_DATA_DIR"
trap 'echo "SIGTERM: final checkpoint"; exit 0' TERM
while true; do sleep 0.05; done
"""


def launch(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
  """Runs a script under DRY_RUN=1 and TEST_ENV, in an environment free of the caller's."""
  full_env = {"PATH": os.environ["PATH"], "DRY_RUN": "1", **TEST_ENV, **env}
  return subprocess.run(["bash", str(LAUNCH / script), *args], env=full_env,
                        capture_output=True, text=True, timeout=30, check=False)


def dry_run(script: str, *args: str, **env: str) -> list[list[str]]:
  """The commands a script prints, each line split back into its words."""
  result = launch(script, *args, **env)
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines()]


def only_command(script: str, *args: str, **env: str) -> list[str]:
  commands = dry_run(script, *args, **env)
  assert len(commands) == 1, commands
  return commands[0]


def flag(argv: list[str], name: str) -> str:
  values = [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"--{name}=")]
  assert len(values) == 1, f"--{name} in {argv}"
  return values[0]


def remote_words(argv: list[str]) -> list[str]:
  """The ssh command line as a worker's shell splits it (operators are words of their own)."""
  lexer = shlex.shlex(flag(argv, "command"), posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  return list(lexer)


def assert_on_slice(argv: list[str], verb: str) -> None:
  assert argv[:6] == [*GCLOUD_TPU, verb, "test-pod"], argv
  assert flag(argv, "zone") == "us-test1-a"
  assert flag(argv, "project") == "test-project"


@pytest.mark.parametrize("script", ("config.sh", *SCRIPTS))
def test_scripts_parse(script):
  result = subprocess.run(["bash", "-n", str(LAUNCH / script)], capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stderr


def test_shellcheck_is_clean():
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed")
  result = subprocess.run(["shellcheck", "-x", *(str(LAUNCH / s) for s in ("config.sh", *SCRIPTS))],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("option", ("-h", "--help"))
def test_help_prints_usage(script, option):
  result = launch(script, option)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith(f"usage: launch/{script}")


@pytest.mark.parametrize("script", ("setup.sh", "stop.sh", "delete.sh"))
def test_unexpected_arguments_are_refused(script):
  result = launch(script, "now")
  assert result.returncode == 2
  assert "unexpected arguments: now" in result.stderr
  assert not result.stdout


def test_create_makes_the_slice():
  argv = only_command("create.sh")
  assert_on_slice(argv, "create")
  assert flag(argv, "accelerator-type") == "v4-16"
  assert flag(argv, "version") == "tpu-ubuntu2204-base"
  assert not {"--spot", "--preemptible", "--reserved"} & set(argv)


def test_defaults_come_from_config():
  unset = {name: "" for name in TEST_ENV}  # empty counts as unset
  create = only_command("create.sh", **unset)
  assert create[5] == "nullearn"
  assert flag(create, "zone") == "us-central2-b"
  assert flag(create, "accelerator-type") == "v4-128"
  assert not [arg for arg in create if arg.startswith("--project")]
  trainer, env = trainer_and_env(only_command("train.sh", **{**unset, "GCS_BUCKET": "bucket"}))
  assert trainer[2:4] == ["--config=configs/1b.py", "--workdir=gs://bucket/runs/1b"]
  assert env == "TFDS_DATA_DIR=gs://bucket/tensorflow_datasets"


@pytest.mark.parametrize("capacity", ("spot", "preemptible", "reserved"))
def test_create_asks_for_capacity(capacity):
  argv = only_command("create.sh", "--network=lab", CAPACITY=capacity)
  assert f"--{capacity}" in argv
  assert "--network=lab" in argv


def test_create_refuses_unknown_capacity():
  result = launch("create.sh", CAPACITY="cheap")
  assert result.returncode == 2
  assert "CAPACITY must be on-demand, spot, preemptible or reserved, not 'cheap'" in result.stderr


def test_setup_copies_the_repo_without_its_venv(tmp_path):
  repo = tmp_path / "repo"
  for name in ("pyproject.toml", "nullearn/model.py", ".ci/run", ".venv/bin/python",
               ".ci/venv/bin/python", ".git/HEAD", "nullearn/__pycache__/model.pyc",
               "nullearn.egg-info/PKG-INFO"):
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    (repo / name).write_text("x")
  pack, copy, install = dry_run("setup.sh", REPO_DIR=str(repo), TMPDIR=str(tmp_path))

  subprocess.run(shlex.join(pack), shell=True, check=True, timeout=30)
  with tarfile.open(tmp_path / "nullearn-src.tar.gz") as tar:
    files = {m.name.removeprefix("./") for m in tar.getmembers() if m.isfile()}
  assert files == {"pyproject.toml", "nullearn/model.py", ".ci/run"}
  assert copy[:5] == [*GCLOUD_TPU, "scp"]
  assert copy[5:7] == [str(tmp_path / "nullearn-src.tar.gz"), "test-pod:nullearn-src.tar.gz"]
  assert flag(copy, "worker") == "all"
  assert_on_slice(install, "ssh")
  assert flag(install, "worker") == "all"
  remote = flag(install, "command")
  assert "tar -xzf nullearn-src.tar.gz -C nullearn" in remote
  assert "uv venv --seed --python 3.12 .venv" in remote
  assert remote.endswith('.venv/bin/pip install --quiet -e ".[tpu]"')


def test_setup_clones_a_repo_url():
  argv = only_command("setup.sh", REPO_URL="https://example.com/nullearn.git",
                      REMOTE_DIR="null dir", PYTHON_VERSION="3.11")
  assert_on_slice(argv, "ssh")
  assert flag(argv, "worker") == "all"
  words = remote_words(argv)
  clone = words.index("clone")
  assert words[clone - 1:clone + 3] == ["git", "clone", "https://example.com/nullearn.git",
                                        "null dir"]
  assert words[words.index("cd"):words.index("cd") + 2] == ["cd", "null dir"]
  assert "3.11" in words


def trainer_and_env(argv: list[str]) -> tuple[list[str], str]:
  """The `nullearn train` words of train.sh's remote command, and the word before them."""
  words = remote_words(argv)
  start = words.index(".venv/bin/nullearn")
  assert words[start - 1] == "nohup"
  return words[start:words.index(">>")], words[start - 2]


def test_train_starts_multihost_training_on_every_worker():
  argv = only_command("train.sh", *AWKWARD_ARGS)
  assert_on_slice(argv, "ssh")
  assert flag(argv, "worker") == "all"
  trainer, env = trainer_and_env(argv)
  assert trainer == [".venv/bin/nullearn", "train", "--config=configs/1b.py",
                     "--workdir=gs://test-bucket/runs/run1", "--multihost", *AWKWARD_ARGS]
  assert env == "TFDS_DATA_DIR=gs://test-bucket/tensorflow_datasets"


def test_train_takes_config_and_dirs_from_the_environment():
  argv = only_command("train.sh", GCS_BUCKET="", CONFIG="configs/mid.py",
                      WORKDIR="gs://other/runs/x", DATA_DIR="gs://other/tfds")
  trainer, env = trainer_and_env(argv)
  assert trainer[2:4] == ["--config=configs/mid.py", "--workdir=gs://other/runs/x"]
  assert env == "TFDS_DATA_DIR=gs://other/tfds"


def test_train_needs_a_bucket():
  result = launch("train.sh", GCS_BUCKET="")
  assert result.returncode == 2
  assert "set GCS_BUCKET" in result.stderr


@pytest.mark.parametrize("args,worker", [((), "0"), (("--worker", "3"), "3"),
                                         (("--worker=12",), "12")])
def test_follow_tails_one_workers_log(args, worker):
  argv = only_command("follow.sh", *args)
  assert_on_slice(argv, "ssh")
  assert flag(argv, "worker") == worker
  assert remote_words(argv) == ["tail", "-n", "200", "-F", "nullearn/train.log"]


@pytest.mark.parametrize("args", [("--worker", "all"), ("--worker",), ("3",)])
def test_follow_refuses_bad_workers(args):
  result = launch("follow.sh", *args)
  assert result.returncode == 2
  assert not result.stdout


def test_stop_and_delete_address_the_slice():
  stop = only_command("stop.sh", STOP_TIMEOUT="60")
  assert_on_slice(stop, "ssh")
  assert flag(stop, "worker") == "all"
  words = remote_words(stop)
  assert words[words.index("kill"):][:2] == ["kill", "-TERM"]
  assert "for _ in $(seq 60); do training || break; sleep 1; done" in flag(stop, "command")
  assert_on_slice(only_command("delete.sh"), "delete")


def test_dry_run_prints_exactly_what_runs(tmp_path):
  record = tmp_path / "gcloud_args"
  fake = tmp_path / "bin" / "gcloud"
  fake.parent.mkdir()
  fake.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" >> {record}\n')
  fake.chmod(0o755)
  path = f"{fake.parent}:{os.environ['PATH']}"
  for script, args in (("create.sh", ("--network=lab",)), ("train.sh", AWKWARD_ARGS)):
    printed = only_command(script, *args, CAPACITY="spot")
    record.unlink(missing_ok=True)
    result = launch(script, *args, CAPACITY="spot", DRY_RUN="0", PATH=path)
    assert result.returncode == 0, result.stderr
    assert ["gcloud", *record.read_text().split("\0")[:-1]] == printed
    assert result.stderr.startswith("+ gcloud compute tpus tpu-vm ")


def test_dry_run_must_be_0_or_1():
  result = launch("delete.sh", DRY_RUN="yes")
  assert result.returncode == 2
  assert "DRY_RUN must be 0 or 1" in result.stderr


@pytest.fixture
def worker_home(tmp_path):
  """A worker's home with a set-up checkout whose trainer is FAKE_TRAINER."""
  trainer = tmp_path / "nullearn" / ".venv" / "bin" / "nullearn"
  trainer.parent.mkdir(parents=True)
  trainer.write_text(FAKE_TRAINER)
  trainer.chmod(0o755)
  yield tmp_path
  pid_file = tmp_path / "nullearn" / "train.pid"
  if pid_file.exists():  # a failed test may leave its fake trainer running
    pid = int(pid_file.read_text())
    if running(pid) and str(trainer) in pathlib.Path(f"/proc/{pid}/cmdline").read_text(
        errors="replace"):
      os.kill(pid, signal.SIGKILL)


def on_worker(home: pathlib.Path, script: str, *args: str) -> subprocess.CompletedProcess:
  """Runs the command `script` sends over ssh in `home`, as a worker's shell would."""
  command = flag(only_command(script, *args, STOP_TIMEOUT="20"), "command")
  return subprocess.run(["bash", "-c", command], cwd=home, capture_output=True, text=True,
                        timeout=30, check=False)


def running(pid: int) -> bool:
  """Alive and not a zombie (whose command line is empty) waiting to be reaped."""
  try:
    return bool(pathlib.Path(f"/proc/{pid}/cmdline").read_bytes())
  except FileNotFoundError:
    return False


def wait_for(predicate, seconds: float = 10.0) -> bool:
  deadline = time.monotonic() + seconds
  while not predicate():
    if time.monotonic() > deadline:
      return False
    time.sleep(0.05)
  return True


def test_worker_starts_detached_refuses_twice_and_stops_with_sigterm(worker_home):
  log, pid_file = worker_home / "nullearn" / "train.log", worker_home / "nullearn" / "train.pid"
  started = on_worker(worker_home, "train.sh", *AWKWARD_ARGS)  # returns: nothing holds ssh open
  assert started.returncode == 0, started.stderr
  pid = int(pid_file.read_text())
  assert wait_for(lambda: "TFDS_DATA_DIR" in log.read_text())
  assert log.read_text().splitlines()[:8] == [
      "arg: train", "arg: --config=configs/1b.py", "arg: --workdir=gs://test-bucket/runs/run1",
      "arg: --multihost", *(f"arg: {a}" for a in AWKWARD_ARGS),
      "TFDS_DATA_DIR=gs://test-bucket/tensorflow_datasets"]

  again = on_worker(worker_home, "train.sh")
  assert again.returncode == 1
  assert "still training" in again.stderr
  assert int(pid_file.read_text()) == pid

  stopped = on_worker(worker_home, "stop.sh")
  assert stopped.returncode == 0, stopped.stderr
  assert f"sent SIGTERM to {pid}" in stopped.stdout
  assert log.read_text().endswith("SIGTERM: final checkpoint\n")
  assert not running(pid)
  assert not pid_file.exists()


def test_worker_stop_leaves_other_processes_alone(worker_home):
  bystander = subprocess.Popen(["sleep", "30"])
  try:
    (worker_home / "nullearn" / "train.pid").write_text(f"{bystander.pid}\n")  # stale pid file
    stopped = on_worker(worker_home, "stop.sh")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    assert bystander.poll() is None
    assert not (worker_home / "nullearn" / "train.pid").exists()
  finally:
    bystander.kill()
    bystander.wait()
