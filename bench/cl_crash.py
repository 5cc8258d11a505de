"""Which CPU training steps crash with channels_last? A standalone repro (pure torch, no Headwise imports).

Each case runs in its own subprocess (a heap corruption kills only that child): a MultiTaskCNN-shaped net (stem
conv3x3 stride 2 -> BN -> ReLU, `depth` residual blocks, every second one stride 2 with a 1x1 shortcut, global
pool, a linear head), `iters` AdamW steps at one batch size, in fp32 or under bf16 autocast, NCHW or channels_last
(weights AND input), with or without BatchNorm, with oneDNN (mkldnn) on or off. A case passes when the child
exits 0 after every step (and its losses are finite); anything else (a signal, glibc's abort) is a failure.
glibc's heap checks are made stricter in the child (MALLOC_CHECK_=3, MALLOC_PERTURB_) so corruption is more
likely to be caught at the step that causes it.

    python bench/cl_crash.py --batches 1-16,64 --iters 200 --modes fp32,bf16 --layouts cl,nchw
    python bench/cl_crash.py --batches 1,3 --iters 50 --mkldnn off
Prints one line per case and a JSON summary (--out FILE writes it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time


def parse_batches(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    return out


def child(batch: int, mode: str, layout: str, bn: bool, mkldnn: bool, iters: int, size: int, width: int,
          depth: int, threads: int) -> None:
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    norm = nn.BatchNorm2d if bn else (lambda c: nn.Identity())  # noqa: E731

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), norm(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), norm(cout)
            self.sc = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout))
                       if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            out = torch.relu_(self.b1(self.c1(x)))  # in place, as MultiTaskCNN's ReLU(inplace=True)
            return torch.relu_(self.b2(self.c2(out)) + self.sc(x))

    layers, cin = [nn.Conv2d(3, width, 3, 2, 1, bias=False), norm(width), nn.ReLU()], width
    for i in range(depth):
        stride = 2 if i % 2 == 1 else 1
        cout = min(cin * 2, width * 4) if stride == 2 else cin
        layers.append(Block(cin, cout, stride))
        cin = cout
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 4))
    cl = layout == "cl"
    if cl:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.rand(batch, size, size, 3).permute(0, 3, 1, 2)  # channels_last strides, as the trainer's batches
    x = x.contiguous(memory_format=torch.channels_last) if cl else x.contiguous()
    y = torch.randn(batch, 4)
    with torch.backends.mkldnn.flags(enabled=mkldnn):
        for _ in range(iters):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                out = net(x)
            loss = nn.functional.mse_loss(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not torch.isfinite(loss):
                sys.exit(3)


def run_case(case: dict, args, script: str = __file__) -> dict:
    """`script --child CASE` in its own process under glibc's heap checks -> the case with rc, ok, seconds and
    the last stderr line (also used by bench/cl_crash_trainer.py)."""
    env = dict(os.environ, MALLOC_CHECK_="3", MALLOC_PERTURB_="165")
    cmd = [sys.executable, script, "--child", json.dumps(case)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
        rc, err = p.returncode, p.stderr.strip().splitlines()[-1:] if p.stderr.strip() else []
    except subprocess.TimeoutExpired:
        rc, err = "timeout", []
    return {**case, "rc": rc, "ok": rc == 0, "seconds": round(time.perf_counter() - t0, 2),
            "stderr": err[0][:160] if err else ""}


def parse_sweep_args(ap: argparse.ArgumentParser, threads: int) -> argparse.Namespace:
    """The options every crash sweep has (--repeat, --threads, --timeout, --out, the hidden --child), parsed."""
    ap.add_argument("--repeat", type=int, default=1, help="subprocesses per case")
    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1-16,64")
    ap.add_argument("--modes", default="fp32,bf16")
    ap.add_argument("--layouts", default="cl")
    ap.add_argument("--bn", default="on", help="on, off or on,off")
    ap.add_argument("--mkldnn", default="on", help="on, off or on,off")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=4)
    args = parse_sweep_args(ap, threads=1)
    if args.child:
        child(**json.loads(args.child))
        return
    onoff = lambda s: [v == "on" for v in s.split(",")]  # noqa: E731
    results = []
    for batch, mode, layout, bn, mk in itertools.product(parse_batches(args.batches), args.modes.split(","),
                                                         args.layouts.split(","), onoff(args.bn),
                                                         onoff(args.mkldnn)):
        for _ in range(args.repeat):
            case = {"batch": batch, "mode": mode, "layout": layout, "bn": bn, "mkldnn": mk, "iters": args.iters,
                    "size": args.size, "width": args.width, "depth": args.depth, "threads": args.threads}
            r = run_case(case, args)
            results.append(r)
            print(f"batch={batch:3d} {mode} {layout:4s} bn={bn:d} mkldnn={mk:d} -> "
                  f"{'ok' if r['ok'] else 'FAIL rc=' + str(r['rc'])} ({r['seconds']} s) {r['stderr']}", flush=True)
    summarize(results, args.out)


def summarize(results: list[dict], out: str | None) -> None:
    """Print the one-line JSON summary; write the whole result to `out` when given."""
    import torch

    summary = {"torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability(),
               "failures": [r for r in results if not r["ok"]], "cases": len(results), "results": results}
    print(json.dumps({k: summary[k] for k in ("torch", "capability", "cases")} |
                     {"failed": len(summary["failures"])}))
    if out:
        with open(out, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
