"""A stand-in for `gcloud` in the launch tests, with TPU slices whose workers are local processes.

    python tests/fake_gcloud.py ARGS...   (tests put it on PATH as `gcloud`)

Everything lives under $FAKE_GCLOUD_ROOT:
  calls.jsonl           every call's arguments, one JSON list a line
  gcs/BUCKET/...        what gs://BUCKET/... holds (`gcloud storage cp/cat/ls/rm/rsync`)
  image/                copied onto every new worker's disk, as a TPU runtime image would be
  slices/NAME.json      a queued resource: its state, create arguments and worker process groups
  slices/NAME-K/worker-I/   the disk of worker I of the K-th slice of that name

`queued-resources create` boots the slice at once: a v4-N slice has N/8 workers, each running
the startup-script metadata with bash in a process group of its own (its "VM"), its disk as
HOME and REMOTE_DIR, and, as there is no metadata server here, NULLEARN_WORKER,
NULLEARN_COORDINATOR (a free local port) and NULLEARN_NUM_WORKERS. `preempt()` is what a Spot
reclaim does: SIGTERM to every worker, then the state SUSPENDED. Deleting a slice shuts its
workers down the same way. Anything else is refused with exit status 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

SHUTDOWN_SECONDS = 60  # then SIGKILL, as a VM that does not stop in time is powered off


def fail(message: str, status: int = 1):
  print(f"ERROR: (fake gcloud) {message}", file=sys.stderr)
  sys.exit(status)


def flags(args: list[str]) -> tuple[list[str], dict[str, str]]:
  """Positional words and --flag[=value] options (a bare --flag is "")."""
  words, options = [], {}
  for arg in args:
    if arg.startswith("--"):
      name, _, value = arg[2:].partition("=")
      options[name] = value
    else:
      words.append(arg)
  return words, options


class Cloud:
  """The buckets and slices under one root directory."""

  def __init__(self, root: pathlib.Path):
    self.root = root

  # gcloud storage, on root/gcs.

  def local(self, url: str) -> pathlib.Path:
    if not url.startswith("gs://"):
      return pathlib.Path(url)
    return self.root / "gcs" / url.removeprefix("gs://")

  def read(self, url: str) -> bytes:
    path = self.local(url)
    if not path.is_file():
      fail(f"NOT_FOUND: {url}")
    return path.read_bytes()

  def storage(self, verb: str, args: list[str]) -> None:
    words, options = flags(args)
    if verb == "cp" and len(words) == 2:
      data = sys.stdin.buffer.read() if words[0] == "-" else self.read(words[0])
      path = self.local(words[1])
      path.parent.mkdir(parents=True, exist_ok=True)
      part = path.with_name(path.name + ".part")  # objects appear whole, never half-written
      part.write_bytes(data)
      part.replace(path)
    elif verb == "cat" and len(words) == 1:
      sys.stdout.buffer.write(self.read(words[0]))
    elif verb == "ls" and len(words) == 1:
      path = self.local(words[0])
      if not path.exists():
        fail(f"One or more URLs matched no objects: {words[0]}")
      names = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
      print("\n".join([f"{words[0].rstrip('/')}/{n}" for n in names] or [words[0]]))
    elif verb == "rsync" and len(words) == 2:
      self.rsync(words[0], words[1], "recursive" in options)
    elif verb == "rm" and len(words) == 1:
      self.read(words[0])
      self.local(words[0]).unlink()
    else:
      fail(f"unsupported: storage {verb} {args}", 2)

  def rsync(self, source_url: str, target_url: str, recursive: bool) -> None:
    """Copies the objects under source that target lacks or holds otherwise (subfolders only
    when recursive), printing each; target objects that source lacks stay."""
    source, target = self.local(source_url), self.local(target_url)
    if not source.is_dir():
      fail(f"One or more URLs matched no objects: {source_url}")
    for path in sorted(source.rglob("*") if recursive else source.iterdir()):
      name = path.relative_to(source)
      copy = target / name
      if path.is_file() and not (copy.is_file() and copy.read_bytes() == path.read_bytes()):
        copy.parent.mkdir(parents=True, exist_ok=True)
        part = copy.with_name(copy.name + ".part")
        part.write_bytes(path.read_bytes())
        part.replace(copy)
        print(
          f"Copying {source_url.rstrip('/')}/{name} to {target_url.rstrip('/')}/{name}",
          file=sys.stderr,
        )

  # Queued resources, on root/slices.

  def slice_file(self, name: str) -> pathlib.Path:
    return self.root / "slices" / f"{name}.json"

  def load(self, name: str) -> dict | None:
    path = self.slice_file(name)
    return json.loads(path.read_text()) if path.exists() else None

  def save(self, name: str, record: dict) -> None:
    path = self.slice_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(json.dumps(record))
    path.with_suffix(".tmp").replace(path)

  def set_state(self, name: str, state: str) -> None:
    self.save(name, {**self.load(name), "state": state})

  def queued_resources(self, verb: str, args: list[str]) -> None:
    words, options = flags(args)
    if len(words) != 1 or "zone" not in options:
      fail(f"queued-resources {verb} needs NAME and --zone: {args}", 2)
    name, record = words[0], self.load(words[0])
    if verb == "create":
      self.create(name, options)
    elif record is None:
      fail(
        f"NOT_FOUND: Resource 'projects/fake/locations/{options['zone']}/queuedResources/"
        f"{name}' was not found"
      )
    elif verb == "describe":
      if options.get("format") != "value(state.state)":
        fail(f"unsupported --format: {options.get('format')}", 2)
      print(record["state"])
    elif verb == "delete":
      if record["state"] == "ACTIVE" and "force" not in options:
        fail("FAILED_PRECONDITION: the queued resource has nodes; delete them or use --force")
      shut_down(record["workers"])
      self.slice_file(name).unlink()
    else:
      fail(f"unsupported: queued-resources {verb}", 2)

  def create(self, name: str, options: dict[str, str]) -> None:
    if self.load(name) is not None:
      fail(f"ALREADY_EXISTS: queued resource {name}")
    for required in ("node-id", "accelerator-type", "runtime-version", "metadata-from-file"):
      if not options.get(required):
        fail(f"queued-resources create needs --{required}", 2)
    if {"spot", "reserved"} <= options.keys():
      fail("--spot and --reserved exclude each other", 2)
    kind, _, cores = options["accelerator-type"].partition("-")
    if kind != "v4" or not cores.isdigit() or int(cores) % 8:
      fail(f"this fake has v4-N slices (N a multiple of 8) only, not {options['accelerator-type']}")
    metadata = dict(item.split("=", 1) for item in options["metadata-from-file"].split(","))
    script = pathlib.Path(metadata["startup-script"]).read_text()
    generation = len(list((self.root / "slices").glob(f"{name}-*"))) + 1
    disks = self.root / "slices" / f"{name}-{generation}"
    count = int(cores) // 8
    port = free_port()
    workers = [self.boot(disks / f"worker-{i}", script, i, count, port) for i in range(count)]
    self.save(
      name, {"state": "ACTIVE", "options": options, "generation": generation, "workers": workers}
    )

  def boot(self, disk: pathlib.Path, script: str, worker: int, count: int, port: int) -> int:
    """Starts a worker's startup script in a session of its own; returns its process group."""
    if (self.root / "image").exists():
      shutil.copytree(self.root / "image", disk, symlinks=True)
    disk.mkdir(parents=True, exist_ok=True)
    (disk / "startup-script").write_text(script)
    env = {
      **os.environ,
      "HOME": str(disk),
      "REMOTE_DIR": str(disk / "nullearn"),
      "NULLEARN_WORKER": str(worker),
      "NULLEARN_NUM_WORKERS": str(count),
      "NULLEARN_COORDINATOR": f"localhost:{port}",
    }
    with open(disk / "journal.log", "ab") as journal:
      proc = subprocess.Popen(
        ["bash", str(disk / "startup-script")],
        cwd=disk,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=journal,
        stderr=subprocess.STDOUT,
        start_new_session=True,
      )
    return proc.pid

  def preempt(self, name: str) -> None:
    """A Spot reclaim: SUSPENDING, every worker stopped as at a shutdown, then SUSPENDED."""
    self.set_state(name, "SUSPENDING")
    shut_down(self.load(name)["workers"])
    self.set_state(name, "SUSPENDED")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def alive(group: int) -> bool:
  """Some process of the group still runs (zombies waiting to be reaped do not count)."""
  for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
    try:
      fields = stat.read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
      continue
    if int(fields[2]) == group and fields[0] != "Z":
      return True
  return False


def shut_down(groups: list[int]) -> None:
  """SIGTERM to every worker, then waits for them, as a VM's shutdown does."""
  for group in groups:
    signal_group(group, signal.SIGTERM)
  deadline = time.monotonic() + SHUTDOWN_SECONDS
  while any(alive(g) for g in groups):
    if time.monotonic() > deadline:
      for group in groups:
        signal_group(group, signal.SIGKILL)
      break
    time.sleep(0.1)


def signal_group(group: int, signum: int) -> None:
  with contextlib.suppress(ProcessLookupError):
    os.killpg(group, signum)


def main(argv: list[str]) -> None:
  cloud = Cloud(pathlib.Path(os.environ["FAKE_GCLOUD_ROOT"]))
  with open(cloud.root / "calls.jsonl", "a") as calls:
    calls.write(json.dumps(argv) + "\n")
  if argv[:1] == ["storage"] and len(argv) > 1:
    cloud.storage(argv[1], argv[2:])
  elif argv[:3] == ["compute", "tpus", "queued-resources"] and len(argv) > 3:
    cloud.queued_resources(argv[3], argv[4:])
  else:
    fail(f"unsupported: gcloud {' '.join(argv)}", 2)


if __name__ == "__main__":
  main(sys.argv[1:])
