"""Albums are folders under ``<root>/albums/``: naming rules, listing their files, fingerprints.

Nothing here opens an image; this is the cheap stat-only layer the sensor runs every tick.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

# Files cameras, phones and operating systems drop beside photos; never photos, never reported.
SYSTEM_FILE_NAMES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r", ".ds_store"})
SYSTEM_DIR_NAMES = frozenset({"__macosx", "@eadir", "$recycle.bin", "system volume information"})
# Files the pipeline itself reads from an album folder (they are part of the fingerprint, not photos).
SIDECAR_FILE_NAMES = frozenset({"split_hints.csv", "split_hints.yaml", "split_hints.yml"})
# Their previous versions, kept by the cuts review page when it rewrites them: neither photos
# nor read by anything, so ignored like hidden files.
SIDECAR_BACKUP_NAMES = frozenset(f"{name}.bak" for name in SIDECAR_FILE_NAMES)

MAX_ALBUM_NAME_LENGTH = 100
_FORBIDDEN_ALBUM_CHARACTERS = frozenset('/\\,:*?"<>|')


@dataclass(frozen=True)
class AlbumFile:
    """One entry of an album folder that may be a photo."""

    relative_path: str  # POSIX-style, relative to the album folder
    absolute_path: Path
    is_symlink: bool
    is_symlinked_dir: bool = False


@dataclass(frozen=True)
class AlbumListing:
    files: list[AlbumFile]
    sidecars: list[AlbumFile]
    ignored: list[str]  # hidden and system files, relative paths


def album_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an album (a Dagster partition key and a folder name), or None."""
    if not name or not name.strip():
        return "empty name"
    if name != name.strip():
        return "leading or trailing whitespace"
    if len(name) > MAX_ALBUM_NAME_LENGTH:
        return f"longer than {MAX_ALBUM_NAME_LENGTH} characters"
    if name in {".", ".."} or ".." in name:
        return "contains '..'"
    bad = sorted({ch for ch in name if ch in _FORBIDDEN_ALBUM_CHARACTERS})
    if bad:
        return f"contains forbidden character(s) {''.join(bad)!r}"
    if any(unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn"} for ch in name):
        return "contains control or invisible characters"
    return None


def is_hidden_or_system(name: str) -> bool:
    lowered = name.lower()
    return name.startswith(".") or lowered in SYSTEM_FILE_NAMES or lowered in SYSTEM_DIR_NAMES


@dataclass(frozen=True)
class AlbumDiscovery:
    albums: list[str]
    rejected: dict[str, str]  # folder name -> why it is not an album


def discover_albums(albums_dir: Path) -> AlbumDiscovery:
    """Album folders directly under ``albums_dir``, sorted; bad names are reported, not raised."""
    albums: list[str] = []
    rejected: dict[str, str] = {}
    if not albums_dir.is_dir():
        return AlbumDiscovery(albums, rejected)
    for entry in sorted(os.scandir(albums_dir), key=lambda e: e.name):
        if is_hidden_or_system(entry.name):
            continue
        if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
            if entry.is_dir():
                rejected[entry.name] = "symlinked folder (albums must be real folders)"
            continue
        problem = album_name_problem(entry.name)
        if problem:
            rejected[entry.name] = problem
        else:
            albums.append(entry.name)
    return AlbumDiscovery(albums, rejected)


def list_album(album_dir: Path) -> AlbumListing:
    """Every candidate photo in an album, nested folders included, symlinks not followed."""
    files: list[AlbumFile] = []
    sidecars: list[AlbumFile] = []
    ignored: list[str] = []
    for current, dirnames, filenames in os.walk(album_dir, followlinks=False):
        current_path = Path(current)
        rel_dir = current_path.relative_to(album_dir)
        kept_dirs = []
        for dirname in sorted(dirnames):
            rel = (rel_dir / dirname).as_posix()
            full = current_path / dirname
            if is_hidden_or_system(dirname):
                ignored.append(rel + "/")
            elif full.is_symlink():
                # os.walk would not descend anyway; surface it so the user knows why it is absent.
                files.append(AlbumFile(rel, full, is_symlink=True, is_symlinked_dir=True))
            else:
                kept_dirs.append(dirname)
        dirnames[:] = kept_dirs
        for filename in sorted(filenames):
            rel = (rel_dir / filename).as_posix()
            full = current_path / filename
            top_level = rel_dir == Path(".")
            if is_hidden_or_system(filename) or (
                top_level and filename.lower() in SIDECAR_BACKUP_NAMES
            ):
                ignored.append(rel)
            elif top_level and filename.lower() in SIDECAR_FILE_NAMES:
                sidecars.append(AlbumFile(rel, full, is_symlink=full.is_symlink()))
            else:
                files.append(AlbumFile(rel, full, is_symlink=full.is_symlink()))
    files.sort(key=lambda f: f.relative_path)
    return AlbumListing(files=files, sidecars=sidecars, ignored=sorted(ignored))


@dataclass(frozen=True)
class AlbumFingerprint:
    """Stat-only hashes of an album folder: its photos, and its side files (split hints) apart,
    so a changed hints file can re-run the tiles alone. Written ``<photos>.<sidecars>``."""

    photos: str
    sidecars: str

    def __str__(self) -> str:
        return f"{self.photos}.{self.sidecars}"

    @classmethod
    def parse(cls, text: str | None) -> AlbumFingerprint | None:
        """The fingerprint ``str()`` wrote; None for anything else (an older cursor's value)."""
        photos, dot, sidecars = (text or "").partition(".")
        return cls(photos, sidecars) if dot and photos and sidecars else None


def album_fingerprints(album_dir: Path) -> AlbumFingerprint:
    """Short hashes of names, sizes and modification times of an album's photos and sidecars.

    Stat only (no file is read), so the sensor can afford it on every tick. A changed fingerprint
    means: something was added, removed, replaced or edited.
    """
    listing = list_album(album_dir)
    return AlbumFingerprint(_stat_digest(listing.files), _stat_digest(listing.sidecars))


def album_fingerprint(album_dir: Path) -> str:
    """Both fingerprints of ``album_fingerprints`` as one string: any change changes it."""
    return str(album_fingerprints(album_dir))


def _stat_digest(entries: list[AlbumFile]) -> str:
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda f: f.relative_path):
        try:
            stat = entry.absolute_path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:  # broken symlink, vanished file: still part of the fingerprint
            size, mtime = -1, -1
        digest.update(
            f"{entry.relative_path}\x1f{size}\x1f{mtime}\x1e".encode("utf-8", "surrogateescape")
        )
    return digest.hexdigest()[:16]
