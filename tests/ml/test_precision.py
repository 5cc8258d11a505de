"""bf16 / channels_last decisions (service/ml/precision.py), with fake CPU flags and capabilities."""

from __future__ import annotations

import pytest
import torch

from service.ml.precision import (
    MIN_CPU_BATCH,
    choose_precision,
    cpu_flags,
    cpu_has_native_bf16,
    min_last_batch,
)

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile\n"
COOPER_LAKE = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512vl\n"
ZEN2 = "processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n"


@pytest.mark.parametrize(("cpuinfo", "native"), [
    (SAPPHIRE_RAPIDS, True), (COOPER_LAKE, True), (SKYLAKE, False), (ZEN2, False),
])
def test_native_bf16_from_cpuinfo_flags(cpuinfo: str, native: bool) -> None:
    flags = cpu_flags(cpuinfo)
    assert "avx2" in flags
    assert cpu_has_native_bf16(flags, capability="AVX512") is native


def test_amx_alone_counts() -> None:
    assert cpu_has_native_bf16({"avx2", "amx_bf16"}, capability="AVX2")


def test_capability_consulted_only_without_flags() -> None:
    # flags readable and without bf16: a capability string does not override them
    assert not cpu_has_native_bf16({"avx2"}, capability="AMX")
    # no flags (not Linux): torch's capability decides
    assert cpu_has_native_bf16(set(), capability="AMX")
    assert not cpu_has_native_bf16(set(), capability="AVX512")
    assert not cpu_has_native_bf16(set(), capability="DEFAULT")


def test_cpu_flags_missing_or_unreadable() -> None:
    assert cpu_flags("processor : 0\nmodel name : x\n") == frozenset()
    assert cpu_flags("") == frozenset()


@pytest.mark.parametrize(("cpuinfo", "bf16"), [(COOPER_LAKE, True), (SAPPHIRE_RAPIDS, True), (SKYLAKE, False),
                                                (ZEN2, False)])
def test_auto_on_cpu_uses_bf16_only_where_native(cpuinfo: str, bf16: bool) -> None:
    p = choose_precision("auto", "cpu", flags=cpu_flags(cpuinfo), capability="AVX512")
    assert p.bf16 is bf16
    assert p.channels_last  # oneDNN NHWC convolutions, whatever the dtype
    assert p.dtype == ("bf16" if bf16 else "fp32")
    assert ("has native bf16" in p.reason) is bf16


def test_forced_modes_ignore_the_hardware() -> None:
    assert choose_precision("bf16", "cpu", flags=cpu_flags(ZEN2)).bf16
    assert not choose_precision("none", "cpu", flags=cpu_flags(SAPPHIRE_RAPIDS)).bf16
    assert choose_precision("none", "cpu", flags=set()).channels_last


def test_cuda_decisions_do_not_need_a_gpu() -> None:
    assert choose_precision("auto", "cuda", cuda_bf16=True).bf16
    assert not choose_precision("auto", "cuda", cuda_bf16=False).bf16
    assert choose_precision("auto", "cuda", cuda_bf16=False).channels_last
    assert not choose_precision("auto", "meta").channels_last


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="mixed_precision: 'fp16'"):
        choose_precision("fp16", "cpu")


def test_autocast_context_really_switches_dtype() -> None:
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with choose_precision("bf16", "cpu").autocast():
        assert lin(x).dtype == torch.bfloat16
    with choose_precision("none", "cpu").autocast():
        assert lin(x).dtype == torch.float32


def test_small_cpu_batches_run_fp32() -> None:
    lin = torch.nn.Linear(4, 4)
    p = choose_precision("bf16", "cpu")
    with p.autocast(MIN_CPU_BATCH - 1):
        assert lin(torch.randn(2, 4)).dtype == torch.float32
    with p.autocast(MIN_CPU_BATCH):
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16


def test_prepare_sets_channels_last_where_chosen_and_keeps_fp32() -> None:
    conv = torch.nn.Conv2d(3, 8, 3)
    choose_precision("auto", "cuda", cuda_bf16=True).prepare(conv)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert conv.weight.dtype == torch.float32
    cpu_conv = choose_precision("auto", "cpu", flags=cpu_flags(COOPER_LAKE)).prepare(torch.nn.Conv2d(3, 8, 3))
    assert cpu_conv.weight.is_contiguous(memory_format=torch.channels_last) and cpu_conv.weight.dtype == torch.float32
    small = choose_precision("auto", "cpu", flags=cpu_flags(COOPER_LAKE), smallest_batch=MIN_CPU_BATCH - 1)
    assert not small.prepare(torch.nn.Conv2d(3, 8, 3)).weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("smallest", "cl"), [(None, True), (1, False), (MIN_CPU_BATCH - 1, False),
                                               (MIN_CPU_BATCH, True), (64, True)])
def test_cpu_steps_below_the_minimum_train_nchw(smallest, cl: bool) -> None:
    for mode in ("auto", "bf16", "none"):
        assert choose_precision(mode, "cpu", smallest_batch=smallest).channels_last is cl
    assert choose_precision("auto", "cuda", cuda_bf16=True, smallest_batch=smallest).channels_last  # CUDA: always


def test_small_last_batches_join_the_one_before() -> None:
    assert min_last_batch("cpu") == MIN_CPU_BATCH and min_last_batch("cpu", 2) == 2 * MIN_CPU_BATCH
    assert min_last_batch("cuda") == 2 and min_last_batch("cuda", 4) == 8


@pytest.mark.parametrize(("params", "bf16"), [(414_758, False), (1_999_999, False), (2_000_000, True),
                                              (11_000_000, True), (None, True)])
def test_auto_on_cuda_trains_small_nets_fp32(params, bf16: bool) -> None:
    # calibrated on session 2's H200 figures: the default 0.41 M-parameter net ran bf16 at 0.81-0.83x fp32
    p = choose_precision("auto", "cuda", cuda_bf16=True, params=params)
    assert p.bf16 is bf16 and p.channels_last
    assert ("parameters" in p.reason) is not bf16
    assert choose_precision("auto", "cuda", cuda_bf16=False, params=params).bf16 is False
    assert choose_precision("bf16", "cuda", cuda_bf16=True, params=params).bf16  # forced: always
    assert not choose_precision("none", "cuda", cuda_bf16=True, params=params).bf16


def test_cuda_memory_estimate_follows_the_rule() -> None:
    from service.ml.memory import bf16_on_cuda
    from service.ml.spec import parse_spec
    spec = parse_spec({"tasks": [{"name": "t", "type": "binary"}]})
    assert not bf16_on_cuda(spec, 400_000) and bf16_on_cuda(spec, 3_000_000) and bf16_on_cuda(spec)
    forced = spec.model_copy(update={"training": spec.training.model_copy(update={"mixed_precision": "bf16"})})
    assert bf16_on_cuda(forced, 400_000)
