"""Hands-off pod runs against a fake cloud: the startup script, GCS logs, markers, keepalive.sh.

tests/fake_gcloud.py stands in for `gcloud`: a queued resource's workers are local processes
running the real startup script that launch/create.sh writes, gs:// is a local directory, and
a preemption is SIGTERM to every worker. The workers' boot image holds a venv already
installed from the uploaded source (so no pip runs here): a fake trainer for the fast tests,
the real `nullearn train` on two processes for the preemption test. WORKDIR is a local
directory both workers share, as they share a gs:// workdir on a pod.
"""

import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest
from fake_gcloud import Cloud, shut_down

REPO = pathlib.Path(__file__).resolve().parents[1]
FAKE_GCLOUD = pathlib.Path(__file__).parent / "fake_gcloud.py"
RUN_GCS = "gs://test-bucket/runs/run1"
AWKWARD_ARGS = ("--config.data.corpus=my docs/it's.jsonl", "$HOME;x")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")

# Stands in for `nullearn train`: resumes from the last checkpoint dir in WORKDIR, "trains" to
# --config.train.steps one step per 0.05 s with a checkpoint each (process_id 0 writes the
# run's files, the others keep pace), saves and exits 0 on SIGTERM; FAKE_TRAINER_EXIT=N makes
# it fail at once.
FAKE_TRAINER = r"""#!/usr/bin/env bash
printf 'arg: %s\n' "$@"
echo "TFDS_DATA_DIR=${TFDS_DATA_DIR:-}"
for arg; do
  case "$arg" in
    --workdir=*) workdir=${arg#*=} ;;
    --config.train.steps=*) steps=${arg#*=} ;;
    --process_id=*) process=${arg#*=} ;;
  esac
done
[[ -z "${FAKE_TRAINER_EXIT:-}" ]] || exit "$FAKE_TRAINER_EXIT"
mkdir -p "$workdir/checkpoints"
[[ "$process" != 0 ]] || echo "{\"train\": {\"steps\": $steps}}" > "$workdir/config.json"
step=$(ls "$workdir/checkpoints" | sort -n | tail -n 1)
echo "resuming from $workdir/checkpoints/${step:-none}"
step=${step:-0}
trap 'echo "SIGTERM: saved checkpoint at step $step; exiting"; exit 0' TERM
while [[ "$step" -lt "$steps" ]]; do
  sleep 0.05
  step=$((step + 1))
  if [[ "$process" == 0 ]]; then
    mkdir -p "$workdir/checkpoints/$step"
  else  # steps are collective: the others keep pace with process 0
    until [[ -d "$workdir/checkpoints/$step" ]]; do sleep 0.05; done
  fi
  echo "[step $step]"
done
"""


class FakeCloud:
  """The fake cloud's root, and the environment the launch scripts run in against it."""

  def __init__(self, tmp_path: pathlib.Path):
    self.root = tmp_path / "cloud"
    self.workdir = tmp_path / "workdir"
    self.api = Cloud(self.root)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE_GCLOUD} "$@"\n')
    (bin_dir / "gcloud").chmod(0o755)
    self.root.mkdir()
    self.started: list[subprocess.Popen] = []
    self.env = {
      "PATH": f"{bin_dir}:{os.environ['PATH']}",
      "FAKE_GCLOUD_ROOT": str(self.root),
      "TMPDIR": str(tmp_path),
      "TPU_NAME": "test-pod",
      "ZONE": "us-test1-a",
      "ACCELERATOR_TYPE": "v4-16",
      "PROJECT": "test-project",
      "GCS_BUCKET": "test-bucket",
      "RUN_NAME": "run1",
      "WORKDIR": str(self.workdir),
      "CAPACITY": "spot",
      "LOG_SYNC_SECONDS": "1",
      "POLL_SECONDS": "0.5",
      "MAX_RESTARTS": "3",
    }

  def launch(self, script: str, *args: str, timeout: float = 60, **env: str):
    return subprocess.run(
      ["bash", str(REPO / "launch" / script), *args],
      env={**self.env, **env},
      capture_output=True,
      text=True,
      timeout=timeout,
      check=False,
    )

  def start(self, script: str, *args: str, **env: str) -> subprocess.Popen:
    proc = subprocess.Popen(
      ["bash", str(REPO / "launch" / script), *args],
      env={**self.env, **env},
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    self.started.append(proc)
    return proc

  def upload_source(self) -> str:
    """Uploads the repository with setup.sh; returns the tarball's sha256."""
    setup = self.launch("setup.sh", REPO_DIR=str(REPO))
    assert setup.returncode == 0, setup.stderr
    return hashlib.sha256(self.api.read(f"{RUN_GCS}/source.tar.gz")).hexdigest()

  def install_image(self, source_id: str, trainer: str | None = None) -> None:
    """A boot image whose venv has source_id installed: the fake trainer, or the real one."""
    venv = self.root / "image" / "nullearn" / "venv"
    venv.parent.mkdir(parents=True)
    if trainer is None:
      venv.symlink_to(sys.prefix)
    else:
      (venv / "bin").mkdir(parents=True)
      (venv / "bin" / "nullearn").write_text(trainer)
      (venv / "bin" / "nullearn").chmod(0o755)
    (venv.parent / "installed").write_text(source_id + "\n")

  def gcs(self, name: str) -> str:
    return self.api.read(f"{RUN_GCS}/{name}").decode()

  def has(self, name: str) -> bool:
    return self.api.local(f"{RUN_GCS}/{name}").exists()

  def calls(self, *prefix: str) -> list[list[str]]:
    lines = (self.root / "calls.jsonl").read_text().splitlines()
    return [c for c in map(json.loads, lines) if c[: len(prefix)] == list(prefix)]

  def shut_down_all(self) -> None:
    """Stops what a failed test may leave running: the scripts it started, then the workers."""
    for proc in self.started:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    for record in (self.root / "slices").glob("*.json"):
      shut_down(json.loads(record.read_text())["workers"])


@pytest.fixture
def cloud(tmp_path):
  fake = FakeCloud(tmp_path)
  yield fake
  fake.shut_down_all()


def wait_for(predicate, seconds: float, proc: subprocess.Popen | None = None) -> None:
  deadline = time.monotonic() + seconds
  while not predicate():
    if proc is not None and proc.poll() is not None:
      pytest.fail(f"exited with {proc.returncode} while waiting:\n{proc.stdout.read()}")
    if time.monotonic() > deadline:
      pytest.fail(f"timed out after {seconds} s")
    time.sleep(0.1)


def boots(log: str) -> list[str]:
  """The log, cut at every boot of the startup script."""
  return re.split(r"^.* startup: worker \d+ of run run1 on .*$", log, flags=re.M)[1:]


def test_keepalive_recreates_a_preempted_slice_and_training_resumes(cloud):
  cloud.install_image(cloud.upload_source(), FAKE_TRAINER)
  keepalive = cloud.start("keepalive.sh", "--config.train.steps=60", *AWKWARD_ARGS)
  wait_for(lambda: (cloud.workdir / "checkpoints" / "5").exists(), 60, keepalive)
  cloud.api.preempt("test-pod")
  out, _ = keepalive.communicate(timeout=60)
  assert keepalive.returncode == 0, out

  creates = cloud.calls("compute", "tpus", "queued-resources", "create")
  deletes = cloud.calls("compute", "tpus", "queued-resources", "delete")
  assert len(creates) == 2 and len(deletes) == 2, out  # the preempted slice, the finished one
  for call in creates:
    assert call[4:6] == ["test-pod", "--node-id=test-pod"]
    assert {
      "--spot",
      "--accelerator-type=v4-16",
      "--zone=us-test1-a",
      "--project=test-project",
    } <= set(call)
  assert all("--force" in call for call in deletes)
  assert re.search(
    r"keepalive: test-pod: SUSPENDED\n.*\+ gcloud compute tpus queued-resources "
    r"delete test-pod --force",
    out,
  )
  assert "run run1 is done" in out
  assert all(STAMP.match(line) for line in out.splitlines() if "keepalive:" in line)

  assert cloud.has("DONE") and not cloud.has("FAILED")
  for worker in (1, 0):
    log = cloud.gcs(f"logs/worker-{worker}.log")
    first, second = boots(log)  # the second slice's disk is new: its log went on from GCS
    assert "\r" not in log
    args = [line[5:] for line in second.splitlines() if line.startswith("arg: ")]
    assert args[:4] == [
      "train",
      "--config=configs/1b.py",
      f"--workdir={cloud.workdir}",
      "--multihost",
    ]
    assert args[5:] == [
      "--num_processes=2",
      f"--process_id={worker}",
      "--config.train.steps=60",
      *AWKWARD_ARGS,
    ]
    assert "SIGTERM: saved checkpoint" in first and "stopped (exit status 0)" in first
    assert "[step 60]" in second and "the run is finished" in second
  assert re.search(r"resuming from .*/checkpoints/none\n", first)  # worker 0 writes them
  saved = int(re.search(r"saved checkpoint at step (\d+)", first).group(1))
  resumed = int(re.search(r"resuming from .*/checkpoints/(\d+)\n", second).group(1))
  assert resumed >= 5 and saved - 1 <= resumed <= saved < 60  # TERM may land before its mkdir


def test_a_failed_trainer_stops_keepalive_and_the_slice(cloud):
  cloud.install_image(cloud.upload_source(), FAKE_TRAINER)
  result = cloud.launch("keepalive.sh", FAKE_TRAINER_EXIT="3")
  assert result.returncode == 1, result.stderr
  assert "training failed" in result.stderr
  assert re.search(
    r"worker \d: exit status 3; log: gs://test-bucket/runs/run1/logs/worker-\d.log",
    cloud.gcs("FAILED"),
  )
  assert "failed with exit status 3" in cloud.gcs("logs/worker-0.log")
  assert len(cloud.calls("compute", "tpus", "queued-resources", "create")) == 1
  assert not (cloud.root / "slices" / "test-pod.json").exists()

  again = cloud.launch("keepalive.sh")
  assert again.returncode == 2
  assert "runs/run1/FAILED: " in again.stderr and "remove it to try again" in again.stderr


def test_keepalive_on_a_finished_run_creates_nothing(cloud):
  done = cloud.api.local(f"{RUN_GCS}/DONE")
  done.parent.mkdir(parents=True)
  done.write_text("finished\n")
  result = cloud.launch("keepalive.sh")
  assert result.returncode == 0, result.stderr
  assert "test-pod: NONE" in result.stderr and "is done" in result.stderr
  assert not cloud.calls("compute", "tpus", "queued-resources", "create")


DATASET = "wikimedia_wikipedia/20231101.en/1.0.0"


def test_local_data_stages_the_dataset_on_every_worker_and_training_reads_it_there(cloud):
  prepared = {
    "dataset_info.json": b'{"name": "wikimedia_wikipedia"}',
    "wikimedia_wikipedia-train.array_record-00000-of-00001": os.urandom(50_000),
    "source_index/source_ids.npy": os.urandom(2_000),
  }
  for name, data in prepared.items():
    path = cloud.api.local(f"gs://test-bucket/tensorflow_datasets/{DATASET}/{name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
  cloud.install_image(cloud.upload_source(), FAKE_TRAINER)
  created = cloud.launch("create.sh", "--config.train.steps=3", LOCAL_DATA="1")
  assert created.returncode == 0, created.stderr
  wait_for(lambda: cloud.has("DONE"), 60)

  rsyncs = cloud.calls("storage", "rsync")
  assert len(rsyncs) == 2, rsyncs  # one a worker
  for worker in (0, 1):
    local = (
      cloud.root
      / "slices"
      / "test-pod-1"
      / f"worker-{worker}"
      / "nullearn"
      / ("tensorflow_datasets")
    )
    assert [
      "storage",
      "rsync",
      "--recursive",
      "gs://test-bucket/tensorflow_datasets",
      str(local),
    ] in rsyncs
    for name, data in prepared.items():
      assert (local / DATASET / name).read_bytes() == data
    log = cloud.gcs(f"logs/worker-{worker}.log")
    assert re.search(rf"^staged \S+ in {re.escape(str(local))}$", log, flags=re.M), log
    assert log.index("staged ") < log.index("starting: ")
    assert f"TFDS_DATA_DIR={local}\n" in log and "the run is finished" in log


def test_local_data_without_the_dataset_fails_the_run_before_training(cloud):
  cloud.install_image(cloud.upload_source(), FAKE_TRAINER)
  created = cloud.launch(
    "create.sh", "--config.train.steps=3", LOCAL_DATA="1", ACCELERATOR_TYPE="v4-8"
  )
  assert created.returncode == 0, created.stderr
  wait_for(lambda: cloud.has("FAILED"), 60)
  log = cloud.gcs("logs/worker-0.log")
  assert "matched no objects: gs://test-bucket/tensorflow_datasets" in log
  assert "staging the data in " in log and "starting: " not in log


def git(*args: str) -> str:
  return subprocess.run(
    ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
    check=True,
    capture_output=True,
    text=True,
  ).stdout.strip()


def test_workers_clone_repo_url_at_repo_ref(cloud, tmp_path):
  repo = tmp_path / "repo"
  git("init", "-q", "-b", "main", str(repo))
  (repo / "VERSION").write_text("one\n")
  git("-C", str(repo), "add", "VERSION")
  git("-C", str(repo), "commit", "-q", "-m", "one")
  git("-C", str(repo), "tag", "v1")
  (repo / "VERSION").write_text("two\n")
  git("-C", str(repo), "commit", "-q", "-am", "two")
  cloud.install_image(git("-C", str(repo), "rev-parse", "v1"), FAKE_TRAINER)

  created = cloud.launch(
    "create.sh",
    "--config.train.steps=3",
    REPO_URL=f"file://{repo}",
    REPO_REF="v1",
    ACCELERATOR_TYPE="v4-8",
  )
  assert created.returncode == 0, created.stderr
  wait_for(lambda: cloud.has("DONE"), 60)
  log = cloud.gcs("logs/worker-0.log")
  assert f"source {git('-C', str(repo), 'rev-parse', 'v1')} is installed" in log, log
  assert "the run is finished" in log
  disk = cloud.root / "slices" / "test-pod-1" / "worker-0"
  assert (disk / "nullearn" / "src" / "VERSION").read_text() == "one\n"


def test_follow_reads_a_workers_log_from_gcs(cloud):
  log = cloud.root / "gcs" / "test-bucket" / "runs" / "run1" / "logs" / "worker-1.log"
  log.parent.mkdir(parents=True)
  log.write_text("2025-01-01T00:00:00Z [step 1] loss=1.0\n")
  result = cloud.launch("follow.sh", "--worker=1", "--gcs")
  assert result.returncode == 0, result.stderr
  assert result.stdout == log.read_text()


TINY = (
  "--config.train.steps=40",
  "--config.train.checkpoint_every=4",
  "--config.train.log_every=4",
  "--config.train.warmup_steps=2",
  "--config.model.d_model=32",
  "--config.model.num_layers=1",
  "--config.model.num_heads=2",
  "--config.model.num_kv_heads=1",
  "--config.model.head_dim=16",
  "--config.model.backbone=8",
  "--config.model.pool=64",
  "--config.model.active=4",
  "--config.model.vocab_size=512",
  "--config.data.seq_len=32",
  "--config.data.batch_size=8",
  "--config.data.packing_bins=8",
  "--config.factworld.num_sources=40",
  "--config.factworld.sources_per_group=4",
)


def test_preempted_nullearn_train_resumes_on_a_new_slice(cloud):
  """The real trainer on two processes: preempted mid-run, resumed by keepalive, finished."""
  cloud.install_image(cloud.upload_source())
  keepalive = cloud.start(
    "keepalive.sh",
    *TINY,
    CONFIG="configs/tiny.py",
    JAX_PLATFORMS="cpu",
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
  )
  wait_for(lambda: (cloud.workdir / "checkpoints" / "4").exists(), 150, keepalive)
  cloud.api.preempt("test-pod")
  out, _ = keepalive.communicate(timeout=150)
  assert keepalive.returncode == 0, out
  assert "test-pod: SUSPENDED" in out and "run run1 is done" in out

  log = cloud.gcs("logs/worker-0.log")
  first, second = boots(log)
  assert "\r" not in log
  saved = int(
    re.search(r"^\S+ SIGTERM: saved checkpoint at step (\d+); exiting$", first, flags=re.M).group(1)
  )
  resumed = re.search(r"^\S+ resuming from checkpoint (\S+)/checkpoints/(\d+)$", second, flags=re.M)
  assert resumed.group(1) == str(cloud.workdir)
  assert int(resumed.group(2)) == saved and 4 <= saved < 40
  steps = [int(s) for s in re.findall(r"\[step (\d+)\]", log)]
  assert steps == sorted(set(steps)) and steps[-1] == 40  # never restarted, never repeated
  assert all(STAMP.match(line) for line in log.splitlines() if "[step " in line)
  assert "the run is finished" in second
  assert "the run is finished" in boots(cloud.gcs("logs/worker-1.log"))[1]
  assert (cloud.workdir / "checkpoints" / "40").is_dir()
  logged = [json.loads(line)["step"] for line in (cloud.workdir / "metrics.jsonl").open()]
  assert logged == sorted(set(logged)) and logged[-1] == 40
