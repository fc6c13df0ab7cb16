"""The digests a file may carry in its ``__metadata__`` (docs/integrity.md):
the one place that names the keys, the algorithms and their encoding.

Three string values, so readers without this feature (upstream 0.8.0
among them) ignore them:

- ``"safetensors.checksum"``: the algorithm, ``"sha256"`` (hashlib, over
  OpenSSL: tamper evidence) or ``"xxh3_128"`` (the ``xxhash`` package: fast,
  for corruption only);
- ``"safetensors.checksum.tensors"``: a compact JSON object, ``{name: hex
  digest of the tensor's bytes as stored in the file}``, in file order;
- ``"safetensors.checksum.data"``: the hex digest of the whole data section
  (the bytes after the header, padding included: ``tail -c +$((9 + N))``).
"""
import json
from concurrent.futures import ThreadPoolExecutor
import hashlib
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._safetensors_c import SafetensorError

__all__ = ["ALGORITHMS", "KEY_ALGORITHM", "KEY_TENSORS", "KEY_DATA", "new_hasher", "digest_buffers",
           "digest_data", "with_digests", "recorded"]

ALGORITHMS = ("sha256", "xxh3_128")
KEY_ALGORITHM = "safetensors.checksum"
KEY_TENSORS = "safetensors.checksum.tensors"
KEY_DATA = "safetensors.checksum.data"
_HEX_LENGTH = {"sha256": 64, "xxh3_128": 32}


def new_hasher(algorithm: str) -> Any:
    """A fresh hasher (``update(buffer)``, ``hexdigest()``) of ``algorithm``;
    both kinds release the GIL while they hash a large buffer."""
    if algorithm == "sha256":
        return hashlib.sha256()
    if algorithm == "xxh3_128":
        try:
            import xxhash
        except ImportError:
            raise ImportError('checksum="xxh3_128" needs the xxhash package: pip install xxhash '
                              '(or pip install "safetensors[xxhash]")') from None
        return xxhash.xxh3_128()
    raise ValueError(f"checksum must be one of {', '.join(map(repr, ALGORITHMS))} or None, not {algorithm!r}")


def digest_buffers(algorithm: str, buffers: Sequence[Any]) -> List[str]:
    """The hex digest of each buffer, hashed in parallel threads, in the order given."""
    new_hasher(algorithm)   # an unknown algorithm or a missing package fails here, once

    def one(buffer: Any) -> str:
        h = new_hasher(algorithm)
        h.update(buffer)
        return h.hexdigest()

    if sum(memoryview(b).nbytes for b in buffers) < (1 << 20) or len(buffers) < 2:
        return [one(b) for b in buffers]
    # At least 8 threads: buffers may be mapped pages still being read from disk, and threads
    # waiting on the disk leave the cores to others (2 GB cold, sha256, 2 cores: 2 threads took
    # 1.17-1.57x the unverified load, 8 threads 0.85-1.05x).
    with ThreadPoolExecutor(max_workers=min(len(buffers), max(8, os.cpu_count() or 1))) as pool:
        return list(pool.map(one, buffers))


def digest_data(algorithm: str, buffers: Sequence[Any]) -> Tuple[List[str], str]:
    """(each buffer's hex digest, the hex digest of all of them in order): for a file's tensors in
    file order, with_digests' tensor_digests and data_digest. The second, one sequential pass, runs
    in a thread of its own beside digest_buffers' threads."""
    new_hasher(algorithm)

    def whole() -> str:
        h = new_hasher(algorithm)
        for b in buffers:
            h.update(b)
        return h.hexdigest()

    with ThreadPoolExecutor(max_workers=1) as pool:
        data = pool.submit(whole)
        return digest_buffers(algorithm, buffers), data.result()


def with_digests(metadata: Optional[Dict[str, str]], algorithm: str, names: Sequence[str],
                 tensor_digests: Sequence[str], data_digest: str) -> Dict[str, str]:
    """``metadata`` plus (or with replaced) the three keys."""
    out = {k: v for k, v in (metadata or {}).items() if k not in (KEY_ALGORITHM, KEY_TENSORS, KEY_DATA)}
    out[KEY_ALGORITHM] = algorithm
    out[KEY_TENSORS] = json.dumps(dict(zip(names, tensor_digests)), separators=(",", ":"), ensure_ascii=False)
    out[KEY_DATA] = data_digest
    return out


def recorded(metadata: Optional[Dict[str, str]], where: str = "file") -> Optional[Tuple[str, Dict[str, str], str]]:
    """(algorithm, {name: hex digest}, data section's hex digest) recorded in
    ``metadata``; None when it records none; SafetensorError naming ``where``
    when the keys are there but malformed."""
    metadata = metadata or {}
    if not any(k in metadata for k in (KEY_ALGORITHM, KEY_TENSORS, KEY_DATA)):
        return None
    algorithm = metadata.get(KEY_ALGORITHM)
    if algorithm not in ALGORITHMS:
        raise SafetensorError(f"{where}: unknown checksum algorithm {algorithm!r} in __metadata__[{KEY_ALGORITHM!r}]")
    try:
        tensors = json.loads(metadata.get(KEY_TENSORS, ""))
    except ValueError:
        tensors = None
    data = metadata.get(KEY_DATA)
    length = _HEX_LENGTH[algorithm]

    def is_hex(v: Any) -> bool:
        return isinstance(v, str) and len(v) == length and all(c in "0123456789abcdef" for c in v)

    if not isinstance(tensors, dict) or not all(is_hex(v) for v in tensors.values()) or not is_hex(data):
        raise SafetensorError(f"{where}: malformed checksums in __metadata__ ({KEY_TENSORS!r} must be a JSON object of "
                              f"{length}-digit lowercase hex {algorithm} digests, {KEY_DATA!r} one such digest)")
    return algorithm, tensors, data
