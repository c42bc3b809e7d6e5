"""Fetches files by URL into a directory, resumable: a file is either whole or absent.

Each file streams to a temporary name and is renamed when complete, so an
interrupted run leaves no half file behind and the next run fetches only what is
missing. http(s) and file:// URLs work alike (urllib).
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

_CHUNK = 1 << 20


class DownloadError(OSError):
  """A file that could not be fetched; the message names its URL."""


def fetch_all(
  urls: Sequence[str],
  dest: str | os.PathLike[str],
  *,
  parallel: int = 4,
  log: Callable[[str], None] = print,
) -> list[pathlib.Path]:
  """Fetches each URL to `dest`/<its last path part>, skipping files already there."""
  dest = pathlib.Path(dest)
  dest.mkdir(parents=True, exist_ok=True)
  paths = [dest / url.rstrip("/").rsplit("/", 1)[-1] for url in urls]
  missing = [(u, p) for u, p in zip(urls, paths) if not p.exists()]
  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    for done, path in enumerate(pool.map(lambda job: _fetch(*job), missing), start=1):
      log(f"downloaded {path.name} ({done}/{len(missing)})")
  return paths


def _fetch(url: str, path: pathlib.Path) -> pathlib.Path:
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  try:
    with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
      shutil.copyfileobj(response, out, _CHUNK)
      expected = response.headers.get("Content-Length")
      if expected is not None and out.tell() != int(expected):
        raise DownloadError(f"{url}: got {out.tell()} of {expected} bytes")
    os.replace(tmp, path)
  except (urllib.error.URLError, OSError) as e:
    pathlib.Path(tmp).unlink(missing_ok=True)
    if isinstance(e, DownloadError):
      raise
    reason = e if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", e)
    raise DownloadError(f"cannot download {url}: {reason}") from e
  return path
