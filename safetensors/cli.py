"""The ``safetensors`` command line (also ``python -m safetensors``): inspect, verify, convert, rewrite and diff,
described in docs/cli.md and build_parser below. Bad input ends as one line on stderr (exit code EXIT_FAILED), never a
traceback; everything printed goes through printable(), so a tensor name cannot forge lines or send terminal escapes.
"""
import argparse
import contextlib
import hashlib
import importlib.util
import json
import math
import mmap
import os
import pickle
import re
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterable, List, Optional, Tuple

from . import SafetensorError, checksums, safe_open, serialize
from ._index import read_index, shard_path
from ._safetensors_c import _MAX_ALIGNMENT, _dtype_table

INDEX_SUFFIX = ".index.json"

EXIT_OK = 0           # success; verify: no problem; diff: no difference
EXIT_FAILED = 1       # verify: problems found; diff: differences found; any command: it failed
EXIT_USAGE = 2        # bad usage (argparse's own code)
EXIT_INTERRUPTED = 130  # Ctrl-C

# What bad input (a file, an index, a path, a checkpoint torch cannot handle) raises: reported
# by main as one line, exit EXIT_FAILED. Anything else is a bug and keeps its traceback.
_INPUT_FAILURES = (SafetensorError, OSError, ValueError, RuntimeError, MemoryError)


class CliError(Exception):
    """A failure reported as one line on stderr, exit code EXIT_FAILED."""


def _progress(iterable: Iterable, **options):
    """iterable with a tqdm bar on stderr when that is a terminal and tqdm is installed."""
    try:
        from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return iterable
    return tqdm(iterable, leave=False, **options) if sys.stderr.isatty() else iterable


def printable(text: str) -> str:
    """text with every character that is not printable (control characters, ESC, newlines, bidi
    overrides, lone surrogates of undecodable file names) written as repr writes it (\\x1b, \\n,
    \\u202e); printable Unicode is kept. Idempotent: lines may be built of pieces already shown."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _say(line: str = "", file=None) -> None:
    print(printable(line), file=file)  # None: sys.stdout


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024:
            return f"{nbytes:.0f} B" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"


def parse_size(text: str) -> int:
    """"5GB" -> 5 * 10**9, "500MiB" -> 500 * 2**20, "1000" -> 1000 (as transformers)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(I?)B|B?)\s*", text.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: use e.g. 5GB, 500MB, 2GiB or a byte count")
    number, prefix, binary = match.groups()
    return int(float(number) * ((1024 if binary else 1000) ** ("KMGT".index(prefix) + 1) if prefix else 1))


def _open_error(path: Optional[str], exc: BaseException) -> str:
    """"PATH: why" for a failure while reading path (the OSError's own file name when it has
    one), or "why" when no path is known or why names it already (the index reader's messages)."""
    if isinstance(exc, OSError) and exc.strerror:
        path, why = exc.filename or path, exc.strerror
    else:
        why = str(exc).strip() or type(exc).__name__
    return f"{path}: {why}" if path and not why.startswith(f"{path}: ") else why


@contextlib.contextmanager
def _reading(path: str):
    """Bad input met inside becomes a CliError naming path."""
    try:
        yield
    except _INPUT_FAILURES as exc:
        raise CliError(_open_error(path, exc)) from None


def describe_file(path: str) -> Dict[str, Any]:
    """Every tensor of a file with its dtype, shape, byte size and offsets."""
    with safe_open(path, "numpy") as f:  # validates every reader rule
        metadata = f.metadata()
        table = f._table()  # file order, absolute offsets
    size = os.path.getsize(path)
    data_start = table[0][3] if table else size  # the data section: from the first tensor to the end
    alignment = math.gcd(data_start, _MAX_ALIGNMENT)  # the largest power of two up to 4096 dividing it
    tensors = [{
        "name": name, "dtype": dtype, "shape": shape, "bytes": end - begin, "offset": begin,
        "data_offsets": [begin - data_start, end - data_start], "parameters": math.prod(shape),
    } for name, dtype, shape, begin, end in table]
    return {"path": path, "header_size": data_start, "alignment": alignment, "size": size, "metadata": metadata,
            "tensors": tensors}


def _describe(path: str) -> List[Dict[str, Any]]:
    if path.endswith(INDEX_SUFFIX):
        return [describe_file(shard_path(path, shard)) for shard in sorted(set(read_index(path)[0].values()))]
    return [describe_file(path)]


def _table(rows: List[List[str]], right: Iterable[int]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i in right else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in rows)


def cmd_inspect(args) -> int:
    files = []
    for path in args.files:
        with _reading(path):
            files.extend(_describe(path))
    totals: Dict[str, Dict[str, int]] = {}
    for t in (t for file in files for t in file["tensors"]):
        entry = totals.setdefault(t["dtype"], {"tensors": 0, "parameters": 0, "bytes": 0})
        for key, count in (("tensors", 1), ("parameters", t["parameters"]), ("bytes", t["bytes"])):
            entry[key] += count
    totals = dict(sorted(totals.items()))
    parameters, nbytes = (sum(t[key] for t in totals.values()) for key in ("parameters", "bytes"))
    if args.json:
        print(json.dumps({"files": files, "totals_by_dtype": totals, "parameters": parameters, "bytes": nbytes},
                         indent=2))
        return EXIT_OK
    sharded = len(files) > 1
    for file in files:
        _say(f"{file['path']}: {len(file['tensors'])} tensors, {_human(file['size'])} "
             f"(header {file['header_size']} bytes, data aligned to {file['alignment']})")
    rows = [(["file"] if sharded else []) + ["name", "dtype", "shape", "bytes", "offset"]]
    rows += [([printable(os.path.basename(file["path"]))] if sharded else []) + [
        printable(t["name"]), t["dtype"], "[" + ", ".join(map(str, t["shape"])) + "]", f"{t['bytes']:,}",
        str(t["offset"])] for file in files for t in file["tensors"]]
    print(_table(rows, right=(sharded + 3, sharded + 4)))  # cells already printable
    print("\ntotals by dtype:")
    rows = [["dtype", "tensors", "parameters", "bytes"]]
    rows += [[dtype, str(t["tensors"]), f"{t['parameters']:,}", f"{t['bytes']:,}"] for dtype, t in totals.items()]
    print(_table(rows, right=(1, 2, 3)))
    _say(f"parameters: {parameters:,}  bytes: {nbytes:,} ({_human(nbytes)})")
    for file in files:
        if file["metadata"]:
            _say(f"metadata ({os.path.basename(file['path'])}):" if sharded else "metadata:")
            for key, value in file["metadata"].items():
                _say(f"  {key}: {value}")
    return EXIT_OK


def _check_digests(path: str, file: Dict[str, Any], args, problems: List[str]) -> Tuple[str, Optional[str]]:
    """Checks the digests ``path`` records (every tensor and the data section; docs/integrity.md),
    hashing over a read-only mapping in parallel threads: (what to say on the ok line, the SHA-256 of the whole
    file when --sha256 asks for it). Appends a problem per tensor that fails."""
    found = checksums.recorded(file["metadata"], path)
    if found is None and args.require_checksums:
        problems.append(f"{path}: no checksums recorded (--require-checksums)")
    if found is None and not args.sha256:
        return "no checksums recorded", None
    tensors, start = file["tensors"], file["header_size"]
    # a valid file is never empty: it can be mapped
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped, \
            memoryview(mapped) as view:
        jobs: List[Tuple[str, List[Any]]] = []
        if found is not None:
            parts = [view[t["offset"]:t["offset"] + t["bytes"]] for t in tensors]
            jobs += [(found[0], [view[start:]]), (found[0], parts)]
            del parts
        if args.sha256:
            jobs.append(("sha256", [view]))
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            results = list(pool.map(lambda job: checksums.digest_buffers(*job), jobs))
        del jobs
    whole = results[-1][0] if args.sha256 else None
    if found is None:
        return "no checksums recorded", whole
    algorithm, recorded, data = found
    failed = [t["name"] for t, got in zip(tensors, results[1]) if recorded.get(t["name"]) != got]
    problems.extend(f"{path}: tensor {name!r} fails its {algorithm} checksum" +
                    ("" if name in recorded else " (none recorded)") for name in failed)
    problems.extend(f"{path}: a checksum recorded for {name!r}, which the file does not hold"
                    for name in sorted(set(recorded) - {t["name"] for t in tensors}))
    if results[0][0] != data:
        problems.append(f"{path}: the data section fails its {algorithm} checksum")
    return f"{algorithm} checksums ok" if not failed and results[0][0] == data else "checksums FAILED", whole


def _verify_file(path: str, args, problems: List[str]) -> Optional[List[Dict[str, Any]]]:
    """describe_file's tensors of a valid file (None and a problem line if invalid)."""
    try:
        file = describe_file(path)
        before = len(problems)
        said, whole = _check_digests(path, file, args, problems)
        line = f"ok: {path} ({len(file['tensors'])} tensors, {said}"
        if args.hash:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                f.seek(file["header_size"])
                chunks = iter(lambda: f.read(1 << 22), b"")
                total = (file["size"] - file["header_size"] + (1 << 22) - 1) >> 22
                for chunk in _progress(chunks, total=total, desc="sha256", unit="chunk"):
                    digest.update(chunk)
            line += f", data sha256 {digest.hexdigest()}"
    except (OSError, SafetensorError) as exc:
        problems.append(_open_error(path, exc))
        return None
    if whole is not None:
        print(f"{whole}  {path}")   # sha256sum's format (a name needing escapes as printable() shows it)
    elif not args.quiet and len(problems) == before:
        _say(line + ")")
    return file["tensors"]


def _verify_index(path: str, args, problems: List[str]) -> None:
    try:
        weight_map, metadata = read_index(path)
    except (OSError, ValueError) as exc:
        problems.append(_open_error(path, exc))
        return
    before = len(problems)
    total = 0
    where: Dict[str, List[str]] = {}
    found_files = set()
    for shard in sorted(set(weight_map.values())):
        try:
            tensors = _verify_file(shard_path(path, shard), args, problems)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if tensors is None:
            continue
        found_files.add(shard)
        for t in tensors:
            where.setdefault(t["name"], []).append(shard)
            total += t["bytes"]
    for name, shard in weight_map.items():
        if shard in found_files and shard not in where.get(name, []):
            problems.append(f"{path}: tensor {name!r} is mapped to {shard} but is not in that file")
    for name, shards in where.items():
        if len(shards) > 1:
            problems.append(f"{path}: tensor {name!r} is in {len(shards)} shards: {', '.join(shards)}")
        if name not in weight_map:
            problems.append(f"{path}: {shards[0]} holds tensor {name!r}, which the index does not list")
    declared = metadata.get("total_size") if isinstance(metadata, dict) else None
    if len(problems) == before and isinstance(declared, int) and declared != total:
        _say(f"warning: {path}: metadata.total_size is {declared} but the shards hold {total} bytes of tensors",
             file=sys.stderr)
    if len(problems) == before and not args.quiet:
        _say(f"ok: {path} ({len(weight_map)} tensors in {len(set(weight_map.values()))} shards)")


def cmd_verify(args) -> int:
    problems: List[str] = []
    for path in args.paths:
        files = [path]
        if os.path.isdir(path):  # a directory stands for its index JSON, else for its .safetensors files
            names = sorted(os.listdir(path))
            files = [os.path.join(path, n) for n in [n for n in names if n.endswith(".safetensors" + INDEX_SUFFIX)]
                     or [n for n in names if n.endswith(".safetensors")]]
            if not files:
                problems.append(f"{path}: no .safetensors file or index in this directory")
        for file in files:
            (_verify_index if file.endswith(INDEX_SUFFIX) else _verify_file)(file, args, problems)
    for problem in problems:
        _say(f"error: {problem}")
    return EXIT_FAILED if problems else EXIT_OK


def load_source(path: str) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """(state dict, metadata) of a checkpoint, read lazily: a PyTorch pickle checkpoint is opened
    with torch.load(weights_only=True, mmap=True), so tensors are paged in as they are written; a
    safetensors file is memory-mapped. A pickle that needs arbitrary code is refused, never run."""
    import torch

    if path.endswith(".safetensors"):
        with _reading(path), safe_open(path, "pt") as f:
            return {k: f.get_tensor(k) for k in f.offset_keys()}, dict(f.metadata() or {})
    if not os.path.isfile(path):
        raise CliError(f"{path}: no such file")
    mmap = zipfile.is_zipfile(path)  # legacy (pre-zip) torch.save files cannot be mapped: read whole
    if not mmap:
        _say(f"note: {path}: old torch.save format, loading it into memory", file=sys.stderr)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CliError(f"{path}: refusing to convert: this pickle cannot be loaded with torch.load(weights_only=True) "
                       f"({first}); it may run arbitrary code, and this tool never unpickles such files") from None
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise CliError(f"{path}: not a PyTorch checkpoint that torch.load can read: {exc}") from None
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in ("state_dict", "model", "module") if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        _say(f"note: {path}: converting the tensors under {key!r}", file=sys.stderr)
        obj = obj[key]
    if not isinstance(obj, dict):
        raise CliError(f"{path}: holds a {type(obj).__name__}, not a state dict (a dict of tensor name -> tensor)")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CliError(f"{path}: no tensors in this checkpoint")
    bad = [k for k in tensors if not isinstance(k, str)]
    if bad:
        raise CliError(f"{path}: tensor keys must be str, found {bad[:3]!r}")
    skipped = [str(k) for k in obj if k not in tensors]
    if skipped:
        _say(f"note: {path}: skipping {len(skipped)} entries that are not tensors: "
             f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}", file=sys.stderr)
    return tensors, {}


def _cast(tensor, dtype):
    # Like transformers' torch_dtype: only floating-point tensors change.
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor


def plan_shards(sizes: Dict[str, int], max_shard_size: int) -> List[List[str]]:
    """Splits names into shards as huggingface_hub / transformers do: in order, a tensor larger than
    the limit gets a shard of its own, and a shard is closed when the next tensor would overflow it."""
    shards: List[List[str]] = []
    current: List[str] = []
    current_size = 0
    for name, size in sizes.items():
        if size > max_shard_size:
            shards.append([name])
            continue
        if current_size + size > max_shard_size:
            shards.append(current)
            current, current_size = [], 0
        current.append(name)
        current_size += size
    if current:
        shards.append(current)
    return shards


def convert_state_dict(state_dict: Dict[str, Any], out: str, *, max_shard_size: Optional[int] = None,
                       dtype: Optional[str] = None, metadata: Optional[Dict[str, str]] = None,
                       progress: bool = False, alignment: Optional[int] = None,
                       checksum: Optional[str] = None) -> List[str]:
    """Writes state_dict as safetensors tensor by tensor (peak memory about one tensor), shared
    tensors once with the other names in the metadata, as save_model does; returns the paths written.
    Without max_shard_size `out` is the file; with it, a directory for model.safetensors, or for
    model-0000i-of-0000n.safetensors shards and model.safetensors.index.json (transformers' names).
    alignment and checksum are save_file's, for every file written; digests in `metadata` (of a
    converted .safetensors file) are dropped, as the tensors may change."""
    import torch

    from .stream import StreamWriter
    from .torch import _remove_duplicate_names  # type: ignore[attr-defined]  # private: not in the stub

    target = getattr(torch, dtype) if dtype is not None else None
    stale = (checksums.KEY_ALGORITHM, checksums.KEY_TENSORS, checksums.KEY_DATA)
    metadata = {key: value for key, value in (metadata or {}).items() if key not in stale}
    metadata.setdefault("format", "pt")
    removed = _remove_duplicate_names(state_dict)  # kept name -> the names sharing its memory
    dropped = {other for others in removed.values() for other in others}
    state_dict = {name: t for name, t in state_dict.items() if name not in dropped}
    declared = {name: _cast(t.to("meta"), target) for name, t in state_dict.items()}  # dtype and shape only
    sizes = {name: t.nelement() * t.dtype.itemsize for name, t in declared.items()}
    if max_shard_size is None:
        if os.path.isdir(out):
            out = os.path.join(out, "model.safetensors")
        plan = [(out, list(state_dict))]
    else:
        os.makedirs(out, exist_ok=True)
        shards = plan_shards(sizes, max_shard_size)
        plan = [(os.path.join(out, f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" if len(shards) > 1
                              else "model.safetensors"), names) for i, names in enumerate(shards)]
    written: List[str] = []
    try:
        for path, names in plan:
            shard_metadata = dict(metadata)
            for kept, others in removed.items():
                for other in others if kept in names else ():
                    shard_metadata.setdefault(other, kept)
            with StreamWriter(path, {name: declared[name] for name in names}, metadata=shard_metadata,
                              alignment=alignment, checksum=checksum) as writer:
                for name in _progress(names, desc="convert", unit="tensor") if progress else names:
                    writer.write(name, _cast(state_dict[name], target))  # at most one cast copy alive
            written.append(path)
        if len(plan) > 1:
            index = {"metadata": {"total_size": sum(sizes.values())},
                     "weight_map": {name: os.path.basename(path) for path, names in plan for name in names}}
            index_path = os.path.join(out, "model.safetensors" + INDEX_SUFFIX)
            tmp = f"{index_path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, index_path)
            written.append(index_path)
    except BaseException:
        for path in written:  # all or nothing: no partial sharded checkpoint
            os.unlink(path)
        raise
    return written


def cmd_convert(args) -> int:
    if not args.input.endswith((".bin", ".pt", ".pth", ".ckpt", ".safetensors")):
        raise CliError(f"{args.input}: expected a PyTorch checkpoint (.bin, .pt, .pth, .ckpt) or a .safetensors file")
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        raise CliError("the output must not be the input file")
    state_dict, metadata = load_source(args.input)
    try:
        written = convert_state_dict(state_dict, args.output, max_shard_size=args.max_shard_size, dtype=args.dtype,
                                     metadata=metadata, progress=True, alignment=args.alignment,
                                     checksum=args.checksum)
    except OSError as exc:  # the output: a missing folder, no permission, a full disk
        raise CliError(_open_error(args.output, exc)) from None
    except _INPUT_FAILURES as exc:  # a tensor torch cannot cast or write (float4 pairs with --dtype, ...)
        raise CliError(_open_error(args.input, exc)) from None
    if not args.quiet:
        for path in written:
            _say(path)
    return EXIT_OK


def rewrite_file(src: str, dst: str, *, alignment: Optional[int] = None, checksum: Optional[str] = "keep") -> None:
    """Writes src's tensors again to dst (the same names, dtypes, shapes and bytes, and its metadata) with
    the given alignment (None: upstream's layout) and digests: "sha256" or "xxh3_128" records them (any
    recorded before are replaced), None records none (removing any), "keep" (default) recomputes those
    recorded with their algorithm. Tensor by tensor from a read-only mapping, through the streaming writer:
    dst may be src (the old file stays mapped until the new one is in place)."""
    with safe_open(src, "numpy") as f:  # every reader rule checked
        metadata, table = f.metadata(), f._table()
    stale = (checksums.KEY_ALGORITHM, checksums.KEY_TENSORS, checksums.KEY_DATA)
    if checksum == "keep":
        found = checksums.recorded(metadata, src)
        checksum = found[0] if found else None
    if checksum is None and metadata and any(key in metadata for key in stale):  # nothing left: no metadata
        metadata = {key: value for key, value in metadata.items() if key not in stale} or None
    from .stream import StreamWriter

    with open(src, "rb") as fd, mmap.mmap(fd.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        data = memoryview(mapped)
        try:
            with StreamWriter(dst, [(name, (dtype, shape)) for name, dtype, shape, _, _ in table], metadata=metadata,
                              alignment=alignment, checksum=checksum) as writer:
                for name, _, _, begin, end in _progress(table, desc="rewrite", unit="tensor"):
                    writer.write(name, data[begin:end])
        finally:
            data.release()


def cmd_rewrite(args) -> int:
    with _reading(args.input):
        rewrite_file(args.input, args.output, alignment=args.alignment,
                     checksum=None if args.checksum == "none" else args.checksum or "keep")
    if not args.quiet:
        _say(args.output)
    return EXIT_OK


# Sub-byte dtypes (F4, F6_*): no NumPy type, and the format leaves the order of
# the values inside a byte to the producer, so diff compares their bytes.
_SUB_BYTE = {code for code, bits, *_ in _dtype_table() if bits < 8}


def _compare(ta: Dict[str, Any], tb: Dict[str, Any], rtol: float, atol: float) -> Optional[str]:
    """None when the values of two tensors of one dtype and shape are equal within tolerance (as
    torch.isclose; integers and booleans exactly), else a short description."""
    import numpy as np

    torch: Any = sys.modules.get("torch")  # diff reads with torch whenever it is installed
    try:
        a, b = (None, None) if ta["dtype"] in _SUB_BYTE else (t["handle"].get_tensor(t["name"]) for t in (ta, tb))
        if torch is not None and isinstance(a, torch.Tensor):  # floats as float64: NumPy has no bfloat16, float8
            a, b = ((v.to(torch.float64) if v.is_floating_point() else v).numpy() for v in (a, b))
    except (SafetensorError, TypeError, NotImplementedError):  # no numeric type here (no ml_dtypes,
        a = b = None                                           # an older torch)
    if a is None:
        a, b = (np.fromfile(t["path"], np.uint8, t["bytes"], offset=t["offset"]) for t in (ta, tb))
        differ = int((a != b).sum())
        return f"{differ} of {ta['bytes']} bytes differ ({ta['dtype']}, compared byte for byte)" if differ else None
    if a.dtype.kind in "biu":
        differ = int((a != b).sum())
        return f"{differ} of {a.size} values differ" if differ else None
    wide = np.complex128 if a.dtype.kind == "c" else np.float64
    x, y = a.astype(wide, copy=False), b.astype(wide, copy=False)
    close = np.isclose(x, y, rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return None
    return f"{int((~close).sum())} of {a.size} values differ (max abs diff {float(np.abs(x - y)[~close].max()):.6g})"


def cmd_diff(args) -> int:
    framework = "pt" if importlib.util.find_spec("torch") else "numpy"  # torch: bfloat16, float8 without ml_dtypes
    sides = []  # per side: name -> describe_file's entry with its file's path and handle; the metadata
    for path in (args.a, args.b):
        tensors: Dict[str, Dict[str, Any]] = {}
        metadata: Dict[str, str] = {}
        with _reading(path):
            for file in _describe(path):
                handle = safe_open(file["path"], framework)
                metadata.update(file["metadata"] or {})
                tensors.update((t["name"], dict(t, path=file["path"], handle=handle)) for t in file["tensors"])
        sides.append((tensors, metadata))
    (a, metadata_a), (b, metadata_b) = sides
    lines = [f"only in {args.a}: {name}" for name in sorted(set(a) - set(b))]
    lines += [f"only in {args.b}: {name}" for name in sorted(set(b) - set(a))]
    common = sorted(set(a) & set(b))
    for name in _progress(common, desc="diff", unit="tensor"):
        ta, tb = a[name], b[name]
        if ta["dtype"] != tb["dtype"]:
            lines.append(f"dtype differs: {name}: {ta['dtype']} vs {tb['dtype']}")
        elif ta["shape"] != tb["shape"]:
            lines.append(f"shape differs: {name}: {ta['shape']} vs {tb['shape']}")
        elif not args.no_values:
            message = _compare(ta, tb, args.rtol, args.atol)
            if message:
                lines.append(f"values differ: {name}: {message}")
    if args.metadata:
        for key in sorted(set(metadata_a) | set(metadata_b)):
            if metadata_a.get(key) != metadata_b.get(key):
                lines.append(f"metadata differs: {key}: {metadata_a.get(key)!r} vs {metadata_b.get(key)!r}")
    for line in lines:
        _say(line)
    if not lines and not args.quiet:
        _say(f"no differences ({len(common)} tensors compared)")
    return EXIT_FAILED if lines else EXIT_OK


def _alignment(text: str) -> int:
    """--alignment, checked by the writers' own rule (an empty file laid out with it) before any work."""
    try:
        serialize({}, alignment=int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid alignment {text!r}: a power of two from 8 to {_MAX_ALIGNMENT}") \
            from None
    return int(text)


def _write_options(p: argparse.ArgumentParser, checksum_choices: Tuple[str, ...], checksum_help: str) -> None:
    p.add_argument("--alignment", type=_alignment, metavar="N",
                   help="pad the header so the data section starts at a multiple of N (a power of two from 8 to "
                        f"{_MAX_ALIGNMENT}); default: upstream's layout (8)")
    p.add_argument("--checksum", choices=checksum_choices, metavar="ALG",
                   help=f"{checksum_help} ({', '.join(checksum_choices)})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safetensors", description="Inspect, verify, convert, rewrite and compare safetensors checkpoints.",
        epilog=f"Exit codes: {EXIT_OK} ok, {EXIT_FAILED} problems/differences found or failure, "
               f"{EXIT_USAGE} bad usage, {EXIT_INTERRUPTED} interrupted.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(run, help: str, description: str, quiet: Optional[str] = None) -> argparse.ArgumentParser:
        p = commands.add_parser(run.__name__[len("cmd_"):], help=help, description=description)
        p.set_defaults(run=run)
        if quiet:
            p.add_argument("-q", "--quiet", action="store_true", help=quiet)
        return p

    p = command(cmd_inspect, "list tensors, dtypes, shapes, sizes, offsets and metadata",
                "A table of every tensor (name, dtype, shape, bytes, file offset), totals by dtype, the parameter "
                "count and the metadata. FILE may be a sharded checkpoint's model.safetensors.index.json.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command(cmd_verify, "check files against every reader rule and their recorded checksums",
                "Opens each file with the strict reader (every rule of the format) and checks the checksums it "
                "records (checksum=...): every tensor's and the data section's; a file without them is reported "
                "as such. For a sharded checkpoint (its index JSON, or a directory holding one) also checks that "
                "each tensor of the index is in its file, exactly once, and that the shards hold nothing else. One "
                "line per problem (each tensor that fails its checksum named); exit code 1 if any.",
                quiet="print problems only")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--hash", action="store_true", help="also print the SHA-256 of each file's data section")
    p.add_argument("--sha256", action="store_true",
                   help="print each valid file's SHA-256 (the whole file, as the Hub lists it for LFS files) in "
                        "sha256sum's format instead of its ok line")
    p.add_argument("--require-checksums", action="store_true",
                   help="a file that records no checksums is a problem")

    p = command(cmd_convert, "PyTorch pickle checkpoint -> safetensors",
                "Converts a PyTorch checkpoint (.bin, .pt, .pth), loaded with torch.load(weights_only=True) only, "
                "or a .safetensors file. Tensors are read lazily and written one at a time, so checkpoints larger "
                "than memory convert. Shared tensors are written once (as save_model does).",
                quiet="do not list the files written")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT",
                   help="the output file; with --max-shard-size, a directory for the shards and the index")
    p.add_argument("--max-shard-size", type=parse_size, metavar="SIZE",
                   help="split into shards of at most SIZE (e.g. 5GB, 500MiB) named as transformers does: "
                        "model-00001-of-00003.safetensors + model.safetensors.index.json")
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32", "float64"),
                   help="cast floating-point tensors to this dtype")
    _write_options(p, checksum_choices=checksums.ALGORITHMS,
                   checksum_help="record the digest of every tensor and of the data section in the metadata "
                                 "(docs/integrity.md); digests of a .safetensors input are dropped otherwise")

    p = command(cmd_rewrite, "add digests or alignment to a .safetensors file",
                "Writes the tensors of IN (the same names, dtypes, shapes and bytes, and its metadata) to OUT with "
                "the data section aligned and/or digests recorded (docs/integrity.md). OUT may be IN: the file is "
                "replaced atomically. Digests IN records are kept up to date (recomputed with their algorithm) "
                "unless --checksum says otherwise.",
                quiet="do not print the file written")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    _write_options(p, checksum_choices=checksums.ALGORITHMS + ("none",),
                   checksum_help="record digests with this algorithm, replacing any recorded; none removes them")

    p = command(cmd_diff, "compare two checkpoints",
                "Prints the tensor names only in one side, dtype and shape differences, and tensors whose values "
                "differ beyond the tolerances (like torch.isclose). Exit code 1 when anything differs.",
                quiet="print differences only")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0: exact)")
    p.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default 0: exact)")
    p.add_argument("--no-values", action="store_true", help="compare names, dtypes and shapes only")
    p.add_argument("--metadata", action="store_true", help="also compare the metadata")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)  # bad usage: argparse exits with EXIT_USAGE
    try:
        return args.run(args)
    except BrokenPipeError:  # `safetensors inspect big | head`
        sys.stderr.close()
        return EXIT_FAILED
    except (CliError,) + _INPUT_FAILURES as exc:  # the one place failures become a line
        _say(f"safetensors {args.command}: error: {_open_error(None, exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
