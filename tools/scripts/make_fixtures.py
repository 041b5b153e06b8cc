#!/usr/bin/python3
"""Writes the PyTorch reference fixtures in tests/fixtures/ (small .safetensors files).

Run with Debian's python3-torch:  /usr/bin/python3 tools/scripts/make_fixtures.py [name ...]
Each module tools/scripts/fixtures/fx_<name>.py defines make(save), where save(name, tensors) writes
tests/fixtures/<name>.safetensors. The build and CI never run this; the outputs are committed.
"""
import importlib, os, pathlib, sys

import torch

here = pathlib.Path(__file__).resolve().parent  # tools/scripts
root = here.parent.parent
sys.path.insert(0, str(root.parent / "shared" / "reference"))
sys.path.insert(0, str(here / "fixtures"))
from unet_s import save_safetensors  # noqa: E402

out_dir = root / "tests" / "fixtures"


def save(name, tensors, metadata=None):
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.safetensors"
    tmp = path.with_suffix(".tmp")
    save_safetensors(str(tmp), {k: v.contiguous() for k, v in tensors.items()}, metadata)
    os.replace(tmp, path)
    print(f"wrote {path.relative_to(root)} ({path.stat().st_size} bytes)")


def main(names):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    modules = sorted(p.stem[3:] for p in (here / "fixtures").glob("fx_*.py"))
    for name in names or modules:
        if name not in modules:
            sys.exit(f"make_fixtures: no tools/scripts/fixtures/fx_{name}.py (have: {', '.join(modules)})")
        torch.manual_seed(0)
        importlib.import_module(f"fx_{name}").make(save)


if __name__ == "__main__":
    main(sys.argv[1:])
