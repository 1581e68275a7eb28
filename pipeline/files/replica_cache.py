"""Trained replica networks kept outside DVC's outputs, so that a pair extended from R to R' replicas trains only
the new ones.

Why a cache of our own: DVC deletes a stage's outputs before it reruns it, and its run-cache restores whole
outputs only for inputs it has seen, so a train stage whose `replicas` went from 3 to 6 would otherwise train all
six. A replica's weights depend on its seed and on the network it trained in (replicas 0-2 share kernel calls,
train.replicas_per_network), never on how many replicas the pair has, so a finished network is reusable as it is.

An entry is found by a SHA-256 of everything its result depends on, which the train stage assembles
(`fingerprint`): the package's source, torch's version and numerics mode, the device and threads, the dataset's
bytes, the model and training settings (all but the replica count) and the network's seeds. Any change among them
is another key, so an entry is never reused for settings it was not trained with; a stale entry is only space.
Entries are written atomically; an unreadable one counts as missing. `PIPELINE_REPLICA_CACHE` names the folder
(default `.cache/replicas` under the project root; `off` turns the cache off, as the tests and benchmarks do).
"""

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

from pipeline.files.artifacts import atomic_path

ENV = "PIPELINE_REPLICA_CACHE"
DEFAULT = Path(".cache") / "replicas"
_SOURCE_HASH: str | None = None


def folder() -> Path | None:
    """Where entries live, or None where the cache is off."""
    value = os.environ.get(ENV, "")
    if value.lower() == "off":
        return None
    return Path(value) if value else DEFAULT


def source_hash() -> str:
    """SHA-256 over the package's Python files (path and bytes): any code change makes every key new."""
    global _SOURCE_HASH
    if _SOURCE_HASH is None:
        root = Path(__file__).resolve().parents[1]
        digest = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
        _SOURCE_HASH = digest.hexdigest()
    return _SOURCE_HASH


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def key(fingerprint: dict[str, Any]) -> str:
    """The entry's name: a hash of the fingerprint as canonical JSON."""
    text = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def load(name: str) -> Any | None:
    """The stored result for key `name`, or None (cache off, no entry, or an entry that cannot be read)."""
    where = folder()
    if where is None:
        return None
    path = where / f"{name}.pkl"
    try:
        with path.open("rb") as handle:
            return pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError):
        return None


def store(name: str, result: Any) -> None:
    """Keep `result` under key `name`; a cache that cannot be written is skipped (it only saves time)."""
    where = folder()
    if where is None:
        return
    try:
        where.mkdir(parents=True, exist_ok=True)
        with atomic_path(where / f"{name}.pkl") as tmp:
            tmp.write_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    except OSError:
        pass
