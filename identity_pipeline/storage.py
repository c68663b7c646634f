"""Where the pipeline keeps its data, and how it writes it without ever leaving half a file.

One storage root (``data/`` or ``$IDENTITY_PIPELINE_DATA_DIR``) holds the user's albums and
everything the assets produce::

    <root>/albums/<album>/...                 source photos (the user's, never written to; only
                                              split_hints.csv, by the cuts review page)
    <root>/assets/<asset>/<album>/table.parquet + files/   per-album asset outputs
    <root>/assets/<asset>/table.parquet + files/           outputs of assets over all albums
    <root>/labels.csv                         names given to faces

Every write goes to a temporary name in the destination folder and is renamed into place, so a
reader (or a run killed with SIGKILL) only ever sees the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import io
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

DATA_DIR_ENV = "IDENTITY_PIPELINE_DATA_DIR"
TABLE_FILE = "table.parquet"
FILES_DIR = "files"
TMP_SUFFIX = ".tmp"


def resolve_data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The storage root: an explicit path, else ``$IDENTITY_PIPELINE_DATA_DIR``, else ``./data``."""
    chosen = explicit or os.environ.get(DATA_DIR_ENV) or "data"
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class DataLayout:
    """Paths inside one storage root."""

    root: Path

    @classmethod
    def from_env(cls, explicit: str | os.PathLike[str] | None = None) -> DataLayout:
        return cls(resolve_data_root(explicit))

    @property
    def albums_dir(self) -> Path:
        return self.root / "albums"

    @property
    def assets_dir(self) -> Path:
        return self.root / "assets"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def labels_path(self) -> Path:
        return self.root / "labels.csv"

    def album_dir(self, album: str) -> Path:
        return self.albums_dir / album

    def asset_dir(self, asset: str, partition: str | None = None) -> Path:
        base = self.assets_dir / asset
        return base / partition if partition is not None else base

    def table_path(self, asset: str, partition: str | None = None) -> Path:
        return self.asset_dir(asset, partition) / TABLE_FILE

    def files_dir(self, asset: str, partition: str | None = None) -> Path:
        return self.asset_dir(asset, partition) / FILES_DIR


@contextlib.contextmanager
def atomic_path(destination: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place if the block succeeds.

    The temporary file lives in the same folder so the final ``os.replace`` is atomic on POSIX.
    On any error (including a full disk) the temporary file is removed and the old destination,
    if any, is left untouched.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = destination.parent / f".{destination.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"
    # O_EXCL with the default mode: a fresh name, and the user's umask applies (mkstemp's 0600
    # would make outputs unreadable to the other users of a shared data root).
    os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, destination)
    except OSError as error:
        tmp_path.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            raise OSError(
                errno.ENOSPC,
                f"No space left on device while writing {destination}; nothing was replaced "
                "(the previous file, if any, is intact). Free some space and re-run.",
            ) from error
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def atomic_write_bytes(destination: Path, data: bytes) -> Path:
    with atomic_path(destination) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
    return destination


def atomic_write_text(destination: Path, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(destination, text.encode(encoding))


def atomic_write_table(destination: Path, table: pa.Table) -> Path:
    with atomic_path(destination) as tmp:
        pq.write_table(table, tmp)
    return destination


def read_table(path: Path) -> pa.Table:
    return pq.read_table(path)


def write_file_once(destination: Path, encode: Callable[[BinaryIO], None]) -> Path:
    """Write a content-addressed file unless it already exists.

    Content-addressed names mean an existing file already holds exactly these bytes, so a re-run
    (or a run resumed after a crash) skips the work and never rewrites a file a reader may hold.
    """
    if destination.exists():
        # Reused: refresh its age, so a concurrent run's prune_files (which spares young files)
        # cannot delete it before this run's table, naming it, is committed.
        with contextlib.suppress(OSError):
            os.utime(destination)
        return destination
    buffer = io.BytesIO()
    encode(buffer)
    return atomic_write_bytes(destination, buffer.getvalue())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_id(*parts: object, length: int = 32) -> str:
    """A stable id from the given parts (e.g. a photo id and a box), hex, ``length`` chars."""
    joined = "\x1f".join(str(part) for part in parts)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:length]


def is_temporary_name(name: str) -> bool:
    """A name ``atomic_path`` writes to before the rename (never an output)."""
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def remove_stale_temporaries(destination: Path, min_age_seconds: float = 3600.0) -> int:
    """Delete ``destination``'s old temporary siblings (writers killed before their rename).

    Only temporaries of this one name, and only old ones: a live writer's is young.
    """
    cutoff = time.time() - min_age_seconds
    removed = 0
    for entry in destination.parent.glob(f".{glob.escape(destination.name)}.*{TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                entry.unlink()
                removed += 1
    return removed


def prune_files(folder: Path, keep: set[str], min_age_seconds: float = 3600.0) -> list[str]:
    """Delete files in ``folder`` (not recursive) that are not in ``keep`` and are old enough.

    Called with ``keep`` = files named by the committed table and by the one being written, so
    files of photos that left the album disappear one run later. The age grace protects files a
    concurrent run of the same partition has just written but not yet committed. Temporary files
    that a killed writer left (``.<name>.<random>.tmp``, see ``atomic_path``) go too, once old.
    """
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    cutoff = time.time() - min_age_seconds
    for entry in folder.iterdir():
        if entry.name in keep or not entry.is_file():
            continue
        if entry.name.startswith(".") and not is_temporary_name(entry.name):
            continue
        with contextlib.suppress(FileNotFoundError):
            if entry.stat().st_mtime < cutoff:
                entry.unlink()
                removed.append(entry.name)
    return sorted(removed)
