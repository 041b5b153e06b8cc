#!/usr/bin/python3
"""PyTorch's side of `smallbatch bench`: the same timed work on the reference UNet-S
(../shared/reference/unet_s.py) or one layer, printing the same JSON fields.

    /usr/bin/python3 tools/scripts/bench_torch.py --norm gn --batch 2 --size 64 --threads 2 --json
    /usr/bin/python3 tools/scripts/bench_torch.py --op groupnorm --shape 8,64,64,64 --threads 2 --json

A training step is zero_grad, forward, cross-entropy, backward and an SGD step (lr 0.01,
momentum 0.9) on fixed random data, as smallbatch bench does. FLOPs follow smallbatch's
convention: convolutions only, 2 x multiply-adds forward, twice that backward.
"""
import argparse, json, resource, statistics, sys, time
from pathlib import Path


def quantile(v, q):
    """Linear interpolation between order statistics (numpy's default), as smallbatch does."""
    v = sorted(v)
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def conv_macs(model, x):
    """Multiply-adds of every Conv2d / ConvTranspose2d in one forward pass, from hooked shapes."""
    import torch.nn as nn
    total = [0]

    def hook(m, inp, out):
        w = m.weight.shape
        if isinstance(m, nn.ConvTranspose2d):
            total[0] += inp[0].numel() * w[1] * w[2] * w[3]
        else:
            total[0] += out.numel() * w[1] * w[2] * w[3]

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    import torch
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return total[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet-s")
    ap.add_argument("--norm", default="gn")
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--in-channels", type=int, default=3)
    ap.add_argument("--base-width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--op", choices=["conv2d", "conv_transpose2d", "groupnorm", "batchnorm"])
    ap.add_argument("--shape")
    ap.add_argument("--out-channels", type=int, default=0)
    ap.add_argument("--kernel", type=int, default=0)
    ap.add_argument("--stride", type=int, default=0)
    ap.add_argument("--padding", type=int, default=-1)
    ap.add_argument("--reference", default=str(Path(__file__).resolve().parents[3] / "shared/reference/unet_s.py"),
                    help="path of unet_s.py")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    try:
        import torch, torch.nn as nn, torch.nn.functional as F
    except ImportError:
        sys.exit("bench_torch.py: PyTorch is not installed (on Debian: apt-get install python3-torch)")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    if a.op is None:
        if a.model != "unet-s":
            sys.exit(f"bench_torch.py: only the reference unet-s is available, not {a.model!r}")
        sys.path.insert(0, str(Path(a.reference).parent))
        from unet_s import UNetS
        model = UNetS(a.norm, a.groups, a.base_width, a.classes, a.in_channels).train()
        x = torch.randn(a.batch, a.in_channels, a.size, a.size)
        target = torch.randint(0, a.classes, (a.batch, a.size, a.size))
        flops = 6 * conv_macs(model, x)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def body():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), target)
            loss.backward()
            opt.step()
        images = a.batch
    else:
        n, c, h, w = (int(s) for s in a.shape.split(","))
        x = torch.randn(n, c, h, w, requires_grad=True)
        flops = 0
        if a.op in ("conv2d", "conv_transpose2d"):
            tr = a.op == "conv_transpose2d"
            co = a.out_channels or c
            k = a.kernel or (2 if tr else 3)
            s = a.stride or (2 if tr else 1)
            p = a.padding if a.padding >= 0 else (0 if tr else k // 2)
            layer = (nn.ConvTranspose2d(c, co, k, stride=s, padding=p, bias=False) if tr
                     else nn.Conv2d(c, co, k, stride=s, padding=p, bias=False))
            flops = 6 * conv_macs(layer, x)
        elif a.op == "groupnorm":
            layer = nn.GroupNorm(min(a.groups, c), c)
        else:
            layer = nn.BatchNorm2d(c).train()
        with torch.no_grad():
            gy = torch.randn_like(layer(x))

        def body():
            x.grad = None
            layer.zero_grad(set_to_none=True)
            layer(x).backward(gy)
        images = n

    for _ in range(a.warmup):
        body()
    ms, cpu = [], []
    for _ in range(a.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        body()
        ms.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.process_time() - c0) * 1000.0)  # all threads of the process

    med = statistics.median(ms)
    out = {"impl": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
           "steps": a.steps, "warmup": a.warmup, "median_ms": med, "p10_ms": quantile(ms, 0.1),
           "p90_ms": quantile(ms, 0.9), "cpu_median_ms": statistics.median(cpu), "images_per_s": 1000.0 * images / med, "flops_per_step": flops,
           "gflops": flops / (med * 1e6) if flops else None,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if a.op is None:
        out.update(model=a.model, norm=a.norm, batch=a.batch, size=a.size)
    else:
        out.update(op=a.op, shape=[n, c, h, w])
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"  {k:14s} {v}")


if __name__ == "__main__":
    main()
