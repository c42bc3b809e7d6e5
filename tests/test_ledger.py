"""The forget ledger: append-only, atomic under concurrent writers, strict when read."""

import json
import multiprocessing

import numpy as np
import pytest

from nullearn import ledger
from nullearn.switch import Switch

WRITERS, PER_WRITER = 6, 25


def test_append_and_read_back(tmp_path):
  ledger.append(tmp_path, [(17, "Ada Lovelace"), (3, "Tarn")], "  a takedown request ", user="ann")
  got = ledger.read(tmp_path)
  assert [(e.id, e.name, e.reason, e.user) for e in got.entries] == [
    (17, "Ada Lovelace", "a takedown request", "ann"),
    (3, "Tarn", "a takedown request", "ann"),
  ]
  assert got.ids.tolist() == [3, 17] and 17 in got and 4 not in got
  assert got.entries[0].time.endswith("+00:00")
  line = (tmp_path / ledger.LEDGER).read_text().splitlines()[0]
  assert json.loads(line) == {
    "id": 17,
    "name": "Ada Lovelace",
    "reason": "a takedown request",
    "time": got.entries[0].time,
    "user": "ann",
  }


def test_no_ledger_is_empty(tmp_path):
  assert len(ledger.read(tmp_path)) == 0 and ledger.read(tmp_path).ids.size == 0


def test_append_refuses_what_it_cannot_keep(tmp_path):
  with pytest.raises(ValueError, match="--reason"):
    ledger.append(tmp_path, [(1, "a")], "  ")
  ledger.append(tmp_path, [(1, "a")], "gdpr", user="bo")
  with pytest.raises(ledger.ForgottenSourceError, match=r"source 1 \('a'\) was forgotten on"):
    ledger.append(tmp_path, [(2, "b"), (1, "a")], "again")
  assert ledger.read(tmp_path).ids.tolist() == [1]  # nothing of the refused call was written
  with pytest.raises(ValueError, match="out of range|must be in"):
    ledger.append(tmp_path, [(-1, "c")], "x")


def _writer(args):
  workdir, w = args
  for i in range(PER_WRITER):
    ledger.append(workdir, [(w * 1000 + i, f"writer {w} source {i}")], f"reason {w}/{i}")


def test_concurrent_writers_lose_nothing(tmp_path):
  """Several processes append at once: every line arrives whole, none twice."""
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(WRITERS) as pool:
    pool.map(_writer, [(str(tmp_path), w) for w in range(WRITERS)])
  got = ledger.read(tmp_path)
  assert len(got.entries) == WRITERS * PER_WRITER
  want = sorted(w * 1000 + i for w in range(WRITERS) for i in range(PER_WRITER))
  assert got.ids.tolist() == want
  assert all(e.reason == f"reason {e.id // 1000}/{e.id % 1000}" for e in got.entries)


@pytest.mark.parametrize(
  "line, reason",
  [
    ('{"id": 1, "name": "a", "reason": "r", "time": "t"', "invalid JSON"),
    ('{"id": 1, "name": "a", "reason": "r", "time": "t"}', "missing key"),
    ('{"id": 1.5, "name": "a", "reason": "r", "time": "t", "user": "u"}', "must be an integer"),
    ('{"id": 1, "name": 7, "reason": "r", "time": "t", "user": "u"}', "name must be a string"),
    ('[1, 2]', "expected a JSON object"),
    ('\udcff', "invalid JSON|codec"),
  ],
)
def test_a_corrupt_line_names_file_and_line(tmp_path, line, reason):
  ledger.append(tmp_path, [(1, "a")], "ok")
  with open(tmp_path / ledger.LEDGER, "a", encoding="utf-8", errors="surrogateescape") as f:
    f.write(line + "\n")
  with pytest.raises(ledger.LedgerError, match=rf"{ledger.LEDGER}:2: .*({reason})"):
    ledger.read(tmp_path)
  with pytest.raises(ledger.LedgerError, match=f"{ledger.LEDGER}:2:"):
    ledger.append(tmp_path, [(5, "e")], "a corrupt ledger takes no more lines")


def test_an_incomplete_last_line_is_reported(tmp_path):
  ledger.append(tmp_path, [(1, "a")], "ok")
  with open(tmp_path / ledger.LEDGER, "a") as f:
    f.write('{"id": 2, "na')
  with pytest.raises(ledger.LedgerError, match=f"{ledger.LEDGER}:2: incomplete line"):
    ledger.read(tmp_path)


def test_a_switch_asking_for_a_forgotten_source_is_refused(tmp_path):
  ledger.append(tmp_path, [(17, "Ada Lovelace")], "takedown", user="ann")
  led = ledger.read(tmp_path)
  with pytest.raises(
    ledger.ForgottenSourceError,
    match=r"source 17 \('Ada Lovelace'\) was forgotten on .* by ann: takedown",
  ):
    led.check(Switch.sources(np.array([[3], [17]])))
  for ok in (Switch.sources(3, exclude=[17]), Switch.backbone(), Switch.expected(exclude=[17])):
    assert led.check(ok) is ok


def test_never_appends_on_a_remote_path():
  with pytest.raises(ValueError, match="local .POSIX. filesystem"):
    ledger.append("gs://bucket/run", [(1, "a")], "r")
