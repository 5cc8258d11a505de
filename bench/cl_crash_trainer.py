"""The full Headwise trainer with channels_last FORCED on CPU (weights and input) and bf16 allowed at any batch size
(precision.MIN_CPU_BF16_BATCH = 1): the configuration torch 2.13 was seen to crash in. One case per process:

    MALLOC_CHECK_=3 python bench/cl_crash_trainer.py BATCH none|bf16   # 4 epochs x 16 steps; exit 0 = no crash
Run each case in its own process (a heap corruption kills it); see bench/cl_crash.py for the standalone sweep.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from train_throughput import _headwise_train, make_data, make_spec  # noqa: E402

import service.ml.precision as precision  # noqa: E402
import service.ml.train.batches as batches  # noqa: E402
from service.ml.spec import parse_spec  # noqa: E402

_inputs = batches.DeviceData.inputs


def channels_last_inputs(self, idx, gen, host_idx=None):
    return _inputs(self, idx, gen, host_idx).contiguous(memory_format=torch.channels_last)


def main() -> None:
    batch, mode = int(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(2)
    precision.CPU_CHANNELS_LAST = True
    precision.MIN_CPU_BF16_BATCH = 1
    batches.DeviceData.inputs = channels_last_inputs
    raw = make_spec(64, batch, 4, False)
    raw["training"]["mixed_precision"] = mode
    t0 = time.time()
    _headwise_train()(parse_spec(raw), make_data(16 * batch, 64), device="cpu")
    print("ok", batch, mode, round(time.time() - t0, 1))


if __name__ == "__main__":
    main()
