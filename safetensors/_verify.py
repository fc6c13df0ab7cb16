"""What ``safe_open(..., verify=True)`` checks, in one object per handle (docs/integrity.md).

The C handle (csrc/binding/verify.c) builds a ``Verifier`` at open, asks it for a hasher per
tensor, feeds the hasher each chunk of the tensor as it is read, and hands the hashers back to
``check``; ``check_buffers`` hashes bytes already in memory (a mapping) in parallel threads. The
digests' format and hashers are safetensors.checksums'.
"""
from typing import Any, Iterable, List, Sequence, Set, Tuple

from ._safetensors_c import SafetensorError
from . import checksums


class Verifier:
    """The recorded digests of one file (``where``: its name, for messages), checked against the
    tensors named in ``names``; ``verified``: the names whose bytes matched (get_slice checks a
    tensor once per handle)."""

    def __init__(self, metadata: Any, names: Sequence[str], where: str):
        found = checksums.recorded(metadata, where)
        if found is None:
            raise SafetensorError(f"{where}: verify=True, but the file records no checksums (none in its "
                                  f"__metadata__: write it with checksum=\"sha256\" or \"xxh3_128\")")
        self.algorithm, self.digests, _ = found
        self.where = where
        missing = [n for n in names if n not in self.digests]
        extra = sorted(set(self.digests) - set(names))
        if missing or extra:
            what = [f"no checksum for tensor{'s' * (len(missing) > 1)} {', '.join(map(repr, missing[:5]))}"] * bool(
                missing) + [f"a checksum for {', '.join(map(repr, extra[:5]))}, not in the file"] * bool(extra)
            raise SafetensorError(f"{where}: the recorded checksums do not match the tensors: {'; '.join(what)}")
        checksums.new_hasher(self.algorithm)   # xxhash missing: an ImportError at open, not at the first read
        self.verified: Set[str] = set()

    def hasher(self) -> Any:
        return checksums.new_hasher(self.algorithm)

    def check(self, pairs: Iterable[Tuple[str, Any]]) -> None:
        """Compares each (name, hasher fed the tensor's bytes); one SafetensorError naming every
        tensor that fails."""
        failed: List[str] = []
        for name, hasher in pairs:
            got = hasher.hexdigest()
            if got == self.digests[name]:
                self.verified.add(name)
            else:
                failed.append(f"{name!r} (recorded {self.digests[name]}, read {got})")
        if failed:
            raise SafetensorError(f"{self.where}: {self.algorithm} checksum mismatch, the file is corrupted or was "
                                  f"changed: tensor{'s' * (len(failed) > 1)} {', '.join(failed)}")

    def check_buffers(self, names: Sequence[str], buffers: Sequence[Any]) -> None:
        """check() of tensors whose bytes are in memory, hashed in parallel threads."""
        digests = checksums.digest_buffers(self.algorithm, buffers)
        self.check((name, _Done(digest)) for name, digest in zip(names, digests))


class _Done:
    """A hasher that is finished: its digest."""
    __slots__ = ("digest",)

    def __init__(self, digest: str):
        self.digest = digest

    def hexdigest(self) -> str:
        return self.digest
