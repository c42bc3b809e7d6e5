"""`nullearn prepare wikipedia`, run as typed, on a small dump in the real schema.

The prepared dataset is read back through TFDS's own entry points (`tfds.builder`,
`tfds.data_source`, `tfds.builder_from_directory`), without TensorFlow.
"""

import functools
import http.server
import pathlib
import shutil
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds
from wikipedia_articles import ARTICLES, NAME, SHARDS, nullearn, prepare, write_shards

from nullearn.data import prepare as prepare_lib
from nullearn.data import source_index
from nullearn.data.wikipedia import WikipediaSource


@pytest.fixture(scope="module")
def parquet(tmp_path_factory) -> pathlib.Path:
  directory = tmp_path_factory.mktemp("parquet")
  write_shards(directory)
  return directory


@pytest.fixture(scope="module")
def data_dir(parquet, tmp_path_factory) -> pathlib.Path:
  return prepare(tmp_path_factory.mktemp("tfds"), parquet, "--workers=1")


def records_of(data_dir: pathlib.Path) -> list[tuple[int, str, str]]:
  records = tfds.data_source(NAME, data_dir=data_dir, split="train")
  return [(int(r["id"]), r["title"].decode(), r["text"].decode()) for r in records]


def index_arrays(data_dir: pathlib.Path) -> list[np.ndarray]:
  index = data_dir / NAME / "1.0.0" / "source_index"
  return [np.load(index / name) for name in source_index.FILES]


def test_every_article_is_a_record_in_file_order_with_its_page_id(data_dir):
  assert records_of(data_dir) == [(d.source_id, d.source, d.text) for d in ARTICLES]
  builder = tfds.builder(NAME, data_dir=data_dir)
  assert builder.info.splits["train"].shard_lengths == [len(s) for s in SHARDS]
  assert builder.info.file_format.value == "array_record"
  same = tfds.builder_from_directory(data_dir / NAME / "1.0.0")
  assert same.info.splits["train"].num_examples == len(ARTICLES)


def test_the_command_says_what_it_made_and_how_to_train_on_it(parquet, tmp_path):
  run = nullearn("prepare", "wikipedia", f"--out={tmp_path}", f"--parquet={parquet}", "--workers=1")
  assert run.returncode == 0, run.stderr
  assert f"{len(ARTICLES)} articles" in run.stdout
  assert f"TFDS_DATA_DIR={tmp_path} --config.data.corpus=tfds:{NAME}" in run.stdout
  again = nullearn("prepare", "wikipedia", f"--out={tmp_path}", f"--parquet={parquet}")
  assert again.returncode == 0 and "already prepared" in again.stdout


def test_the_same_files_give_the_same_dataset_whatever_the_workers_or_order(
  data_dir, parquet, tmp_path
):
  by_glob = prepare(tmp_path / "glob", f"{parquet}/train-*.parquet", "--workers=2")
  reversed_order = tmp_path / "reversed"
  prepare_lib.prepare(
    str(reversed_order), sorted(parquet.glob("*.parquet"))[::-1], workers=1, log=lambda _: None
  )
  for other in (by_glob, reversed_order):
    assert records_of(other) == records_of(data_dir)
    assert (
      WikipediaSource(data_dir=other).fingerprint == WikipediaSource(data_dir=data_dir).fingerprint
    )
    for mine, theirs in zip(index_arrays(other), index_arrays(data_dir)):
      np.testing.assert_array_equal(mine, theirs)


def test_the_index_maps_page_ids_and_titles_to_records(data_dir):
  ids, id_positions, hashes, hash_positions = index_arrays(data_dir)
  assert list(ids) == sorted(d.source_id for d in ARTICLES)
  assert [ARTICLES[p].source_id for p in id_positions] == list(ids)
  assert [source_index.title_hash(ARTICLES[p].source) for p in hash_positions] == list(hashes)


def _bad_shard(directory: pathlib.Path, **columns) -> pathlib.Path:
  return write_shards(directory, shards=[SHARDS[0]], **columns)[0]


def _truncated(directory: pathlib.Path, parquet: pathlib.Path) -> None:
  data = (parquet / "train-00001-of-00003.parquet").read_bytes()
  (directory / "train-00001-of-00003.parquet").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
  "bad, needles",
  [
    (lambda d, _: _bad_shard(d, title=None), ["missing column(s) title", "00000-of-00001"]),
    (
      lambda d, _: (d / "train-00000-of-00001.parquet").write_bytes(b"PAR1 not parquet"),
      ["not a readable parquet file", "00000-of-00001"],
    ),
    (_truncated, ["train-00001-of-00003.parquet"]),
    (
      lambda d, _: _bad_shard(d, id=["7", "12a"] + ["8"] * 18),
      ["00000-of-00001.parquet: row 1", "id '12a' is not a page id"],
    ),
    (
      lambda d, _: _bad_shard(d, title=[f"t{i}" for i in range(19)] + [None]),
      ["row 19", "title must be a non-empty string"],
    ),
    (
      lambda d, _: write_shards(d, shards=[SHARDS[0], SHARDS[0][3:4]]),
      [
        f"page id {SHARDS[0][3].source_id} is on two rows",
        "00000-of-00002.parquet row 3",
        "00001-of-00002.parquet row 0",
      ],
    ),
  ],
)
def test_a_bad_input_is_one_line_naming_file_and_row(parquet, tmp_path, bad, needles):
  (tmp_path / "in").mkdir()
  bad(tmp_path / "in", parquet)
  with pytest.raises(prepare_lib.PrepareError) as e:
    prepare_lib.prepare_wikipedia(
      str(tmp_path / "out"), parquet=str(tmp_path / "in"), workers=1, log=lambda _: None
    )
  assert "\n" not in str(e.value)
  for needle in needles:
    assert needle in str(e.value)
  assert not list((tmp_path / "out").glob(f"{NAME}/*")), "nothing half-made is left"


def test_bad_places_are_one_line(tmp_path):
  for place, needles in [
    (dict(out=str(tmp_path), parquet=f"{tmp_path}/nothing*.parquet"), ["no parquet files"]),
    (dict(out="gs://bucket/tfds", parquet=str(tmp_path)), ["local directory", "rsync"]),
  ]:
    with pytest.raises(prepare_lib.PrepareError) as e:
      prepare_lib.prepare_wikipedia(**place)
    assert "\n" not in str(e.value) and all(n in str(e.value) for n in needles)


def test_the_command_prints_one_line_on_error_and_keeps_an_existing_dataset(data_dir, tmp_path):
  write_shards(tmp_path, shards=SHARDS[:2])
  run = nullearn("prepare", "wikipedia", f"--out={data_dir}", f"--parquet={tmp_path}")
  assert run.returncode == 2, run.stderr[-3000:]
  assert run.stderr.strip().splitlines() == [
    f"nullearn prepare: error: {data_dir}/{NAME}/1.0.0 already holds a dataset prepared from "
    f"other files (3 files, {len(ARTICLES)} articles): remove it or choose another --out"
  ]
  assert records_of(data_dir) == [(d.source_id, d.source, d.text) for d in ARTICLES]
  run = nullearn("prepare", "books", f"--out={tmp_path}")
  assert run.returncode != 0 and "usage: nullearn prepare wikipedia" in run.stderr


def test_the_fingerprint_names_the_files_a_dataset_was_prepared_from(data_dir, tmp_path):
  fingerprint = WikipediaSource(data_dir=data_dir).fingerprint
  assert fingerprint.startswith(f"{NAME}:1.0.0:{len(ARTICLES)}:")
  other = prepare_lib.prepare(
    str(tmp_path), write_shards(tmp_path / "in", SHARDS[::-1]), log=lambda _: None
  )
  assert other.articles == len(ARTICLES)
  assert WikipediaSource(data_dir=tmp_path).fingerprint != fingerprint, "other files, other text"


class _Handler(http.server.SimpleHTTPRequestHandler):
  def log_message(self, *args):  # keep the test output clean
    del args


@pytest.fixture
def mirror(tmp_path):
  """The 41 shards of the dump's layout, served over HTTP on the loopback; requests counted."""
  root = tmp_path / "mirror"
  shards = [ARTICLES[k :: prepare_lib.NUM_SHARDS] for k in range(prepare_lib.NUM_SHARDS)]
  write_shards(root / "20231101.en", shards=shards)
  requests = []

  class Counting(_Handler):
    def do_GET(self):
      requests.append(self.path)
      super().do_GET()

  server = http.server.ThreadingHTTPServer(
    ("127.0.0.1", 0), functools.partial(Counting, directory=str(root))
  )
  threading.Thread(target=server.serve_forever, daemon=True).start()
  yield f"http://127.0.0.1:{server.server_address[1]}/20231101.en", root / "20231101.en", requests
  server.shutdown()


def test_download_then_prepare_equals_preparing_the_local_files(mirror, tmp_path):
  url, files, requests = mirror
  run = nullearn(
    "prepare", "wikipedia", f"--out={tmp_path}/out", f"--parquet_url={url}", "--workers=1"
  )
  assert run.returncode == 0, run.stderr[-3000:]
  downloads = tmp_path / "out" / "downloads" / NAME
  assert sorted(p.name for p in downloads.iterdir()) == sorted(p.name for p in files.iterdir())
  assert len(requests) == prepare_lib.NUM_SHARDS
  local = prepare(tmp_path / "local", files, "--workers=1")
  assert records_of(tmp_path / "out") == records_of(local)
  assert sorted(records_of(local)) == sorted((d.source_id, d.source, d.text) for d in ARTICLES)
  (downloads / "train-00007-of-00041.parquet").unlink()
  shutil.rmtree(tmp_path / "out" / NAME)
  prepare_lib.prepare_wikipedia(
    str(tmp_path / "out"), parquet_url=url, workers=1, log=lambda _: None
  )
  assert requests[prepare_lib.NUM_SHARDS :] == ["/20231101.en/train-00007-of-00041.parquet"], (
    "a rerun fetches only the missing file"
  )


def test_a_failed_download_is_one_line_and_leaves_no_partial_file(mirror, tmp_path):
  url, files, _ = mirror
  (files / "train-00040-of-00041.parquet").unlink()
  with pytest.raises(prepare_lib.PrepareError) as e:
    prepare_lib.prepare_wikipedia(str(tmp_path), parquet_url=url, workers=1, log=lambda _: None)
  assert str(e.value) == (
    f"cannot download {url}/train-00040-of-00041.parquet: HTTP Error 404: File not found"
  )
  downloads = tmp_path / "downloads" / NAME
  assert len(list(downloads.iterdir())) == prepare_lib.NUM_SHARDS - 1, "only whole files"


def test_an_integer_id_column_is_read_as_page_ids(tmp_path):
  """Other exports of the dump store the page id as an integer column."""
  docs = SHARDS[1]
  pq.write_table(
    pa.table(
      {
        "id": pa.array([d.source_id for d in docs], pa.int64()),
        "title": [d.source for d in docs],
        "text": [d.text for d in docs],
      }
    ),
    tmp_path / "ints.parquet",
  )
  out = prepare(tmp_path / "out", tmp_path / "ints.parquet", "--workers=1")
  assert records_of(out) == [(d.source_id, d.source, d.text) for d in docs]
