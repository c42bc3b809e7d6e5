"""A gs:// run's prompt router: built locally and uploaded whole, loaded through a local copy
(the index is memory-mapped). gs:// is redirected to a local directory with etils' own epath
mock, below every path operation the code makes."""

import os

from etils.epath import testing

from nullearn.data import source_index
from nullearn.router import PromptRouter

ENTRIES = [(10 + 3 * i, f"Title {i} about topic{i % 7} and item{i}") for i in range(60)]
QUERIES = ["topic3 item17", "item5", "title topic6"]


def gcs_in(root):
  """gs://BUCKET/... read and written as root/BUCKET/..."""
  local = lambda path: os.fspath(root / os.fspath(path).removeprefix("gs://"))
  redirect = lambda fn, path, *args, **kwargs: fn(local(path), *args, **kwargs)
  copy = lambda fn, path, dst, *args, **kwargs: fn(local(path), local(dst), *args, **kwargs)
  return testing.mock_epath(
    open=redirect,
    exists=redirect,
    isdir=redirect,
    listdir=redirect,
    makedirs=redirect,
    mkdir=redirect,
    remove=redirect,
    stat=redirect,
    rmtree=redirect,
    copy=copy,
  )


def test_a_gs_router_is_uploaded_whole_and_routes_as_a_local_one(tmp_path, monkeypatch):
  monkeypatch.setattr(source_index, "_CACHE", tmp_path / "cache")
  local = PromptRouter.build(ENTRIES, tmp_path / "local")
  with gcs_in(tmp_path / "gcs"):
    built = PromptRouter.build(ENTRIES, "gs://bucket/runs/r1/router")
    loaded = PromptRouter.load("gs://bucket/runs/r1/router")
  uploaded = tmp_path / "gcs" / "bucket" / "runs" / "r1" / "router"
  assert sorted(os.listdir(uploaded)) == sorted(os.listdir(tmp_path / "local"))
  for name in os.listdir(uploaded):
    assert (uploaded / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
  (copy,) = (tmp_path / "cache" / "router").iterdir()  # what the maps read
  assert sorted(os.listdir(copy)) == sorted(os.listdir(uploaded))
  for router in (built, loaded):
    assert len(router) == len(ENTRIES)
    for q in QUERIES:
      assert router.top(q, 5, exclude=[13]) == local.top(q, 5, exclude=[13])
