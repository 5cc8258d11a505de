"""Several processes per job on the CPU with gloo: exact masked losses across ranks (service/ml/distributed.py).

Two real processes started by `torchrun --standalone --nproc-per-node 2` train a two-head model under
DistributedDataParallel for a few steps on one fixed batch split by rank; a sparse head is labelled on ONE rank
only and another head on no rank at all. The result must equal one process training on the whole batch with the
plain single-process masked mean (same parameters within 1e-6), and the all-missing head must not move."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from service.ml.distributed import World, global_masked_loss, rank_slice

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP
    sys.path.insert(0, sys.argv[2])
    from tests.scale.test_distributed import make_problem, step_losses
    from service.ml.distributed import init_from_env, leave, rank_slice

    world = init_from_env("cpu")
    model, x, y, mask = make_problem()
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    mine = rank_slice(torch.arange(len(x)), world)
    for _ in range(3):
        opt.zero_grad()
        to_backward, means, _counts = step_losses(ddp, x[mine], y[mine], mask[mine], world)
        to_backward.sum().backward()
        opt.step()
    if world.is_main:
        out = {k: v.tolist() for k, v in model.state_dict().items()}
        out["means"] = means.tolist()
        with open(sys.argv[1], "w") as f:
            json.dump(out, f)
    leave(0)
''')


def make_problem():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"trunk": torch.nn.Linear(4, 3), "sparse": torch.nn.Linear(3, 1),
                                 "dense": torch.nn.Linear(3, 1), "missing": torch.nn.Linear(3, 1)})
    model.forward = lambda x: (lambda h: torch.cat([model["sparse"](h), model["dense"](h),  # noqa: E731
                                                    model["missing"](h)], 1))(torch.tanh(model["trunk"](x)))
    x = torch.randn(8, 4)
    y = torch.randn(8, 3)
    mask = torch.zeros(8, 3, dtype=torch.bool)
    mask[0, 0] = mask[2, 0] = mask[4, 0] = True  # sparse head: samples 0, 2, 4 -> all on rank 0 of 2
    mask[:, 1] = True  # dense head: every sample
    return model, x, y, mask  # head 2 ("missing"): no label anywhere


def step_losses(net, x, y, mask, world):
    out = net(x)
    err = ((out - y) ** 2) * mask
    return global_masked_loss(err.sum(0), mask.sum(0), world)


def test_single_process_equals_plain_masked_mean() -> None:
    model, x, y, mask = make_problem()
    to_backward, means, counts = global_masked_loss((((model.forward(x) - y) ** 2) * mask).sum(0), mask.sum(0),
                                                    World())
    plain = [(((model.forward(x)[:, h] - y[:, h]) ** 2)[mask[:, h]]).mean().item() for h in (0, 1)]
    assert means[:2].tolist() == pytest.approx(plain, rel=1e-6) and means[2].item() == 0.0
    assert counts.tolist() == [3.0, 8.0, 0.0]
    to_backward.sum().backward()
    assert model["missing"].weight.grad.abs().sum().item() == 0.0 and model["sparse"].weight.grad.abs().sum() > 0


def test_rank_slice_partitions() -> None:
    idx = list(range(10))
    assert rank_slice(idx, World(0, 2)) + rank_slice(idx, World(1, 2)) == [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]


@pytest.mark.timeout(300)
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.fail("torchrun not found next to this interpreter (it comes with torch)")
    repo = Path(__file__).resolve().parents[2]
    script, out = tmp_path / "ddp_step.py", tmp_path / "out.json"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    result = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(script), str(out), str(repo)],
                            capture_output=True, text=True, timeout=240, env=env, cwd=repo)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    got = json.loads(out.read_text())

    model, x, y, mask = make_problem()  # the reference: one process, the whole batch, the plain masked mean
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    initial_missing = model["missing"].weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        out_all = model.forward(x)
        loss = sum((((out_all[:, h] - y[:, h]) ** 2)[mask[:, h]]).mean() for h in (0, 1))
        loss.backward()
        opt.step()
    for name, value in model.state_dict().items():
        assert torch.tensor(got[name]) == pytest.approx(value, abs=1e-6), name
    assert torch.equal(torch.tensor(got["missing.weight"]), initial_missing), "the all-missing head moved"
    assert got["means"][2] == 0.0
