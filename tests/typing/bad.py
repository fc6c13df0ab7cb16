"""User code with mistakes the stubs must make mypy report, one per line
marked with an error comment (tests/test_typing.py checks each is reported and no other)."""
import numpy as np

from safetensors import TensorSpec, safe_open, serialize
from safetensors.numpy import load_file, save_file

safe_open("model.safetensors")  # E: missing framework
safe_open(42, "pt")  # E: filename is not a path
safe_open("model.safetensors", framework=1)  # E: framework is not a str
safe_open("model.safetensors", "pt", backend=2)  # E: backend is not a str
save_file([np.zeros(2)], "x.safetensors")  # E: a list, not a dict
save_file({"a": np.zeros(2)}, "x.safetensors", metadata={"k": 1})  # E: metadata values must be str
save_file({"a": np.zeros(2)}, "x.safetensors", None, 64)  # E: alignment is keyword-only
save_file({"a": np.zeros(2)}, "x.safetensors", checksum=True)  # E: checksum is a str
load_file(b"x.safetensors", backend=None)  # E: backend is not a str
TensorSpec("F32", [1], 0, 4)  # E: TensorSpec is keyword-only
serialize({"x": {"dtype": "float32", "shape": [1], "data": b"1234"}})  # E: 0.7 dict form
with safe_open("m.safetensors", "np") as f:
    count: int = f.keys()  # E: keys() is a list of str
    f.get_slice(0)  # E: tensor names are str
