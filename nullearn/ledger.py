"""The forget ledger: the sources a run no longer serves, and why.

`<workdir>/forget_ledger.jsonl` holds one JSON object a line (id, name, reason,
time, user). It is append-only: `append` writes all of its lines with a single
`os.write` on an O_APPEND file while holding an exclusive `flock`, then fsyncs,
so concurrent writers never interleave or lose a line and each line is whole or
absent. `inference.load_run` applies it on every load: the ledgered sources'
sinks are zeroed in the weights and a switch that names one of them is refused.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import functools
import getpass
import json
import os
from collections.abc import Iterable, Sequence

import jax
import numpy as np
from etils import epath

from nullearn.data.records import check_source_id
from nullearn.switch import Switch

LEDGER = "forget_ledger.jsonl"
_FIELDS = ("id", "name", "reason", "time", "user")


class LedgerError(ValueError):
  """A corrupt ledger line; the message names file:line."""


class ForgottenSourceError(ValueError):
  """A request named a source the ledger forgot: it is refused, never served."""


@dataclasses.dataclass(frozen=True)
class Entry:
  id: int
  name: str
  reason: str
  time: str  # ISO 8601, UTC
  user: str

  def line(self) -> str:
    return json.dumps(dataclasses.asdict(self), ensure_ascii=False) + "\n"


@dataclasses.dataclass(frozen=True)
class Ledger:
  """The forgotten sources of a run (empty: nothing forgotten, or the ledger not applied)."""

  entries: tuple[Entry, ...] = ()

  @functools.cached_property
  def ids(self) -> np.ndarray:
    """Sorted distinct forgotten ids, int64."""
    return np.asarray(sorted(self._by_id), np.int64)

  @functools.cached_property
  def _by_id(self) -> dict[int, Entry]:
    """The first entry of each id (a hand-edited ledger may repeat one)."""
    out: dict[int, Entry] = {}
    for e in self.entries:
      out.setdefault(e.id, e)
    return out

  def __len__(self) -> int:
    return len(self._by_id)

  def __contains__(self, source_id) -> bool:
    return int(source_id) in self._by_id

  def entry(self, source_id: int) -> Entry:
    return self._by_id[int(source_id)]

  def refuse(self, source_ids, what: str = "source") -> None:
    """Raises ForgottenSourceError naming the first ledgered id among `source_ids`."""
    ids = np.asarray(source_ids).reshape(-1)
    gone = ids[np.isin(ids, self.ids)] if self.entries else ids[:0]
    if gone.size:
      e = self.entry(int(gone[0]))
      raise ForgottenSourceError(
        f"{what}: source {e.id} ({e.name!r}) was forgotten on {e.time} by {e.user}: {e.reason}"
      )

  def check(self, switch: Switch, what: str = "switch") -> Switch:
    """The switch itself, unless it asks for a forgotten source's sinks.

    Traced ids (inside `jax.jit`) cannot be read; the weights hold none of the
    forgotten sinks anyway (`load_run` zeroed them), so such a call serves nothing.
    """
    if switch.mode == "source" and not isinstance(switch.source_ids, jax.core.Tracer):
      self.refuse(np.asarray(switch.source_ids), what)
    return switch


def path(workdir: str | epath.PathLike) -> epath.Path:
  return epath.Path(workdir) / LEDGER


def read(workdir: str | epath.PathLike) -> Ledger:
  """The run's ledger (empty when there is none). A bad line is a LedgerError naming it."""
  p = path(workdir)
  if not p.exists():
    return Ledger()
  return Ledger(tuple(_parse(p, p.read_bytes())))


def _parse(p, data: bytes) -> list[Entry]:
  entries = []
  lines = data.split(b"\n")
  for lineno, raw in enumerate(lines, start=1):
    if lineno == len(lines):  # after the last newline: must be empty, or a line was cut short
      if raw:
        raise LedgerError(f"{p}:{lineno}: incomplete line (no newline at its end): {raw[:80]!r}")
      break
    try:
      entries.append(_entry(raw))
    except (ValueError, UnicodeDecodeError) as e:
      raise LedgerError(f"{p}:{lineno}: {e}") from e
  return entries


def _entry(raw: bytes) -> Entry:
  try:
    obj = json.loads(raw.decode("utf-8"))
  except json.JSONDecodeError as e:
    raise ValueError(f"invalid JSON: {e}") from e
  if not isinstance(obj, dict):
    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
  missing = [f for f in _FIELDS if f not in obj]
  if missing:
    raise ValueError(f"missing key(s): {', '.join(missing)}")
  for f in _FIELDS[1:]:
    if not isinstance(obj[f], str):
      raise ValueError(f"{f} must be a string, got {obj[f]!r}")
  return Entry(check_source_id(obj["id"]), *(obj[f] for f in _FIELDS[1:]))


def append(
  workdir: str | epath.PathLike,
  sources: Sequence[tuple[int, str]],
  reason: str,
  user: str | None = None,
) -> list[Entry]:
  """Appends one entry per (id, name); all of them or none.

  Refuses an empty reason, a source already in the ledger (naming when it was
  forgotten) and a corrupt ledger, checked under the lock, so two concurrent
  calls never ledger a source twice.
  """
  p = path(workdir)
  if "://" in str(p):
    raise ValueError(
      f"{p}: the forget ledger is appended on a local (POSIX) filesystem, where "
      "appends are atomic; forget on a local copy of the run and upload it"
    )
  reason = check_reason(reason)
  if not sources:
    raise ValueError("--sources: no sources to forget")
  now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
  user = user or _user()
  entries = list(
    {
      int(i): Entry(check_source_id(int(i)), name, reason, now, user) for i, name in sources
    }.values()
  )
  data = "".join(e.line() for e in entries).encode()
  fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    ledger = Ledger(tuple(_parse(p, p.read_bytes())))
    for e in entries:
      if e.id in ledger:
        ledger.refuse([e.id], "--sources")
    if os.write(fd, data) != len(data):
      raise OSError(f"{p}: short write; the ledger's last line is incomplete")
    os.fsync(fd)
  finally:
    os.close(fd)  # releases the lock
  return entries


def check_reason(reason: str | None) -> str:
  """The reason, stripped; an empty one is refused (the ledger keeps why)."""
  if not (reason or "").strip():
    raise ValueError("--reason: say why the sources are forgotten (it is kept in the ledger)")
  return reason.strip()


def _user() -> str:
  try:
    return getpass.getuser()
  except (KeyError, OSError):
    return f"uid {os.getuid()}"


def format_entries(entries: Iterable[Entry]) -> str:
  """A table for `nullearn forget --list`."""
  rows = [f"{'id':>10}  {'time':<25}  {'user':<12}  name: reason"]
  rows += [f"{e.id:>10}  {e.time:<25}  {e.user:<12}  {e.name}: {e.reason}" for e in entries]
  return "\n".join(rows)
