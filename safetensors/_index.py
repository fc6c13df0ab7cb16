"""A sharded checkpoint's index (``model.safetensors.index.json``): the one
reader of its JSON and the one rule for where its shard names lead, used by
the command line (``safetensors.cli``) and ``load_distributed``.

Bad input raises ValueError with the index's path in the message.
"""
import json
import os
from typing import Any, Dict, Tuple, Union


def parse_index(raw: Union[bytes, str], where: str) -> Tuple[Dict[str, str], Any]:
    """(weight_map, metadata) of an index's bytes; ``where`` names it in
    messages. The weight_map must map tensor names to file names; metadata
    is whatever the index holds there (None when absent)."""
    try:
        index = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{where}: cannot read the index: {exc}") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{where}: not a safetensors index (expected a \"weight_map\" of tensor name -> file name)")
    return weight_map, index.get("metadata")


def read_index(path: str) -> Tuple[Dict[str, str], Any]:
    """parse_index of a local index file; OSError when it cannot be read."""
    with open(path, "rb") as f:
        return parse_index(f.read(), path)


def shard_path(index_path: str, shard: str) -> str:
    """The file a shard name of a local index stands for. Names come from the
    index, so they are not trusted: the file must really lie inside the
    index's folder (as given, or the folder the index file itself really is
    in: the huggingface_hub cache links the index and every shard into its
    blobs folder). Absolute names, ``..`` escapes and symlinks leading out
    are refused with a ValueError."""
    folder = os.path.dirname(index_path)
    path = os.path.join(folder, shard)
    if not os.path.isabs(shard) and "\0" not in shard:
        real = os.path.realpath(path)
        for home in {os.path.realpath(folder), os.path.dirname(os.path.realpath(index_path))}:
            if real != home and os.path.commonpath([real, home]) == home:
                return path
    raise ValueError(f"{index_path}: shard name {shard!r} leads outside the index's folder: refused")


def shard_url(index_url: str, shard: str) -> str:
    """The URL a shard name of a remote index stands for: next to the index
    (same prefix). Names that could leave it (absolute, ``..``, a scheme, a
    query) are refused with a ValueError, as shard_path refuses them."""
    parts = shard.split("/")
    if shard and not shard.startswith("/") and ".." not in parts and "://" not in shard and not any(
            c in shard for c in "?#\\\0"):
        return f"{index_url.split('?', 1)[0].rsplit('/', 1)[0]}/{shard}"
    raise ValueError(f"{index_url}: shard name {shard!r} leads outside the index's folder: refused")
