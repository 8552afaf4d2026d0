"""Content-addressed cache of expensive artefacts (trained victims, later detectors)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CACHE_FORMAT = 1  # bump when what a cached artefact contains changes


def default_cache_dir() -> Path:
    """$STEALCHECK_CACHE_DIR, else $XDG_CACHE_HOME/stealcheck, else ~/.cache/stealcheck."""
    if os.environ.get("STEALCHECK_CACHE_DIR"):
        return Path(os.environ["STEALCHECK_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stealcheck"


def fingerprint(obj: Any) -> str:
    """Stable sha256 (hex, 16 chars) of a JSON-serialisable description."""
    blob = json.dumps({"format": CACHE_FORMAT, "obj": obj}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, so a changed model file invalidates what was derived from it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Cache:
    """Folders under ``root``, one per (kind, key); written atomically via a temporary folder."""

    def __init__(self, root: str | Path | None = None, read: bool = True):
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.read = read  # False: recompute everything (still write fresh entries)

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def has(self, kind: str, key: str) -> bool:
        return self.read and (self.path(kind, key) / "COMPLETE").exists()

    def writer(self, kind: str, key: str) -> "_CacheWriter":
        return _CacheWriter(self.path(kind, key))


class _CacheWriter:
    """Context manager giving a temp folder that becomes the cache entry on success."""

    def __init__(self, final: Path):
        self.final = final
        self.tmp = final.with_name(final.name + f".tmp{os.getpid()}")

    def __enter__(self) -> Path:
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        import shutil

        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        (self.tmp / "COMPLETE").write_text("ok\n")
        shutil.rmtree(self.final, ignore_errors=True)
        os.replace(self.tmp, self.final)
