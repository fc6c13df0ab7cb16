"""Benchmark workloads: generated once with the reference (upstream) writer.

Run as a script with the upstream interpreter:  workloads.py OUT_DIR [NAME...] [--quick]
It writes <name>.safetensors and <name>.json (tensor count, payload bytes, largest tensor) of
the NAMEs (default all), in their small forms with --quick.
"""
import json
import os
import sys

# name -> (description, quick?) ; sizes below
NAMES = ["gpt2", "lora", "shard2g", "header100k", "tiny1m"]  # tiny1m: full run only


def gpt2(n_layer=12, vocab=50257, d=768, ctx=1024):
    """GPT-2-like: the shapes of upstream's bench (160 f32 tensors, 548 MB at 12 layers)."""
    t = {"wte.weight": (vocab, d), "wpe.weight": (ctx, d)}
    for i in range(n_layer):
        p = f"h.{i}."
        t.update({
            p + "ln_1.weight": (d,), p + "ln_1.bias": (d,),
            p + "attn.bias": (1, 1, ctx, ctx),
            p + "attn.c_attn.weight": (d, 3 * d), p + "attn.c_attn.bias": (3 * d,),
            p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,),
            p + "ln_2.weight": (d,), p + "ln_2.bias": (d,),
            p + "mlp.c_fc.weight": (d, 4 * d), p + "mlp.c_fc.bias": (4 * d,),
            p + "mlp.c_proj.weight": (4 * d, d), p + "mlp.c_proj.bias": (d,),
        })
    t["ln_f.weight"] = (d,)
    t["ln_f.bias"] = (d,)
    return t, "float32"


def lora(n_layer=500, r=32):
    """LoRA-like: 1,000 tensors of 32x32 f32 (per-tensor overhead)."""
    t = {}
    for i in range(n_layer):
        t[f"base_model.layers.{i}.lora_A.weight"] = (r, r)
        t[f"base_model.layers.{i}.lora_B.weight"] = (r, r)
    return t, "float32"


def shard(n_layer=5, h=4096, inter=11008):
    """LLM shard: bf16 Llama-like layers (H=4096, I=11008), 5 layers ~ 2.0 GB."""
    t = {}
    for i in range(n_layer):
        p = f"model.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t[p + f"self_attn.{n}.weight"] = (h, h)
        t[p + "mlp.gate_proj.weight"] = (inter, h)
        t[p + "mlp.up_proj.weight"] = (inter, h)
        t[p + "mlp.down_proj.weight"] = (h, inter)
        t[p + "input_layernorm.weight"] = (h,)
        t[p + "post_attention_layernorm.weight"] = (h,)
    return t, "bfloat16"


def header_heavy(n=100_000):
    """Header-heavy: 100,000 tiny f32 tensors of shape (4,)."""
    return {f"param.{i}": (4,) for i in range(n)}, "float32"


def specs(quick=False):
    if quick:  # small forms for the developers' guard (bench/guard.py)
        return {"gpt2": gpt2(n_layer=2, vocab=12800), "lora": lora(),
                "shard2g": shard(n_layer=1, h=2048, inter=5504),
                "header100k": header_heavy(20_000)}
    return {"gpt2": gpt2(), "lora": lora(), "shard2g": shard(), "header100k": header_heavy(),
            "tiny1m": header_heavy(1_000_000)}


def generate(out_dir, quick=False, only=None):
    import torch
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    for name, (shapes, dtype) in specs(quick).items():
        if only and name not in only:
            continue
        path = os.path.join(out_dir, name + ".safetensors")
        meta_path = os.path.join(out_dir, name + ".json")
        if os.path.exists(meta_path) and os.path.exists(path):
            continue
        dt = getattr(torch, dtype)
        # a cheap non-zero pattern (upstream's bench uses zeros; content does not matter)
        tensors = {k: torch.full(s, 0.5, dtype=dt) for k, s in shapes.items()}
        save_file(tensors, path, metadata={"format": "pt"})
        largest = max(shapes, key=lambda k: tensors[k].numel())
        meta = {"name": name, "tensors": len(shapes), "dtype": dtype,
                "payload": sum(v.numel() * v.element_size() for v in tensors.values()),
                "file_size": os.path.getsize(path), "largest": largest,
                "largest_shape": list(shapes[largest]),
                "largest_nbytes": tensors[largest].numel() * tensors[largest].element_size()}
        with open(meta_path, "w") as f:
            json.dump(meta, f)
        print(f"[bench] wrote {path}: {meta['tensors']} tensors, "
              f"{meta['file_size'] / 1e6:.1f} MB", flush=True)
        tensors = None  # free before the next workload


if __name__ == "__main__":
    names = [a for a in sys.argv[2:] if a != "--quick"]
    generate(sys.argv[1], quick="--quick" in sys.argv[2:], only=names or None)
