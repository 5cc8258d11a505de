"""Subprocess helper: train one spec on random data and print the process's peak RSS (VmHWM) as JSON.

usage: python -m tests.guards.measure_peak '<spec json>' NUM_SAMPLES
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path


def vm_hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    import numpy as np

    from service.ml.data import Labels, TrainingData
    from service.ml.spec import parse_spec
    from service.ml.train import train

    spec = parse_spec(json.loads(sys.argv[1]))
    n = int(sys.argv[2])
    cfg = spec.model
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8,
                                           shape=(n, cfg.image_size, cfg.image_size, cfg.channels))
        images[:] = rng.integers(0, 256, images.shape, dtype=np.uint8)
        images.flush()
        del images
        labels = {}
        for t in spec.tasks:
            if t.type == "multiclass":
                values = rng.integers(0, len(t.classes), n).astype(np.int64)
            elif t.type == "binary":
                values = rng.integers(0, 2, n).astype(np.float32)
            else:
                values = rng.normal(size=n).astype(np.float32)
            labels[t.name] = Labels(values=values, mask=np.ones(n, dtype=bool))
        data = TrainingData(images=np.load(path, mmap_mode="r"), labels=labels)
        base = vm_hwm()
        train(spec, data, device="cpu")
    print(json.dumps({"peak_bytes": vm_hwm(), "import_bytes": base}))


if __name__ == "__main__":
    main()
