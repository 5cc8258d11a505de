"""Backbones in torchvision's layout: a reference network transcribed from torchvision's source (written here,
independently of service/ml/backbones, random weights and random BatchNorm statistics) is saved, imported into
the weights store, loaded into the engine's trunk, and must give identical outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from service.ml.backbones import BACKBONES, build_reference, build_trunk, footprint
from service.ml.weights import import_weights, load_pretrained


# ---------------------------------------------------------------- reference: torchvision/models/resnet.py
class TVBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TVBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TVResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# ---------------------------------------------------------------- reference: torchvision/models/mobilenetv3.py
def _make_divisible(v, divisor, min_value=None):
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class TVConv2dNormActivation(nn.Sequential):  # torchvision.ops.misc.Conv2dNormActivation
    def __init__(self, cin, cout, kernel_size=3, stride=1, groups=1, norm_layer=None, activation_layer=nn.ReLU):
        layers = [nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
                  norm_layer(cout)]
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)


class TVSqueezeExcitation(nn.Module):  # torchvision.ops.misc.SqueezeExcitation with Hardsigmoid
    def __init__(self, input_channels, squeeze_channels):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x):
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return s * x


class TVInvertedResidual(nn.Module):
    def __init__(self, cin, kernel, expanded, cout, use_se, activation, stride, norm_layer):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        act = nn.Hardswish if activation == "HS" else nn.ReLU
        layers = []
        if expanded != cin:
            layers.append(TVConv2dNormActivation(cin, expanded, 1, norm_layer=norm_layer, activation_layer=act))
        layers.append(TVConv2dNormActivation(expanded, expanded, kernel, stride, groups=expanded,
                                             norm_layer=norm_layer, activation_layer=act))
        if use_se:
            layers.append(TVSqueezeExcitation(expanded, _make_divisible(expanded // 4, 8)))
        layers.append(TVConv2dNormActivation(expanded, cout, 1, norm_layer=norm_layer, activation_layer=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        result = self.block(x)
        if self.use_res_connect:
            result += x
        return result


TV_LARGE = [(16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
            (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
            (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
            (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
            (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1)]


class TVMobileNetV3(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        layers = [TVConv2dNormActivation(3, 16, 3, 2, norm_layer=norm_layer, activation_layer=nn.Hardswish)]
        layers += [TVInvertedResidual(*c, norm_layer=norm_layer) for c in TV_LARGE]
        layers.append(TVConv2dNormActivation(160, 960, 1, norm_layer=norm_layer, activation_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(960, 1280), nn.Hardswish(inplace=True),
                                        nn.Dropout(p=0.2, inplace=True), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


REFERENCES = {
    "resnet18": lambda k=1000: TVResNet(TVBasicBlock, [2, 2, 2, 2], k),
    "resnet34": lambda k=1000: TVResNet(TVBasicBlock, [3, 4, 6, 3], k),
    "resnet50": lambda k=1000: TVResNet(TVBottleneck, [3, 4, 6, 3], k),
    "mobilenet_v3_large": lambda k=1000: TVMobileNetV3(k),
}
# torchvision's documented parameter counts (ImageNet classifier included)
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                      "mobilenet_v3_large": 5_483_032}


def randomised(arch: str, num_classes: int = 1000, seed: int = 0) -> nn.Module:
    """A reference network with random weights AND BatchNorm statistics from random data (so BN matters and
    features depend on the input), eval mode."""
    torch.manual_seed(seed)
    net = REFERENCES[arch](num_classes)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
            m.momentum = None  # cumulative average over the calibration batches
        net.train()(torch.rand(8, 3, 64, 64))
        for m in bns:
            m.momentum = 0.1
    return net.eval()


def pooled_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    got = {}
    handle = net.avgpool.register_forward_hook(lambda _m, _i, out: got.setdefault("f", out.flatten(1)))
    logits = net(x)
    handle.remove()
    return got["f"], logits


def test_reference_parameter_counts_match_torchvision():
    for arch, n in TORCHVISION_PARAMS.items():
        assert sum(p.numel() for p in REFERENCES[arch]().parameters()) == n


@pytest.mark.parametrize("arch", list(BACKBONES))
def test_names_and_shapes_identical_to_torchvision(arch):
    ref = REFERENCES[arch]().state_dict()
    ours = build_reference(arch, 1000).state_dict()
    assert list(ours) == list(ref)
    assert all(ours[k].shape == ref[k].shape and ours[k].dtype == ref[k].dtype for k in ref)
    trunk = build_trunk(arch).state_dict()
    prefix = BACKBONES[arch].classifier_prefix
    assert list(trunk) == [k for k in ref if not k.startswith(prefix)]
    build_reference(arch, 1000).load_state_dict(REFERENCES[arch]().state_dict(), strict=True)


@pytest.mark.parametrize("arch", list(BACKBONES))
def test_imported_reference_gives_identical_outputs(arch, tmp_path: Path):
    ref = randomised(arch, num_classes=10)
    src = tmp_path / f"{arch}-ref.pth"
    torch.save(ref.state_dict(), src)
    info = import_weights(src, arch, f"{arch}-test", tmp_path / "store")
    assert info.arch == arch and len(info.sha256) == 64
    assert info.dropped and all(k.startswith(BACKBONES[arch].classifier_prefix) for k in info.dropped)

    trunk = build_trunk(arch)
    load_pretrained(trunk, tmp_path / "store", f"{arch}-test", arch)
    trunk.eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        want, logits = pooled_features(ref, x)
        got = trunk(x)
        full = build_reference(arch, 10)
        full.load_state_dict(ref.state_dict(), strict=True)
        full_logits = full.eval()(x)
    assert got.shape == (3, BACKBONES[arch].feature_dim)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(full_logits, logits, rtol=0, atol=0)
    assert not torch.allclose(want[0], want[1])  # a real, input-dependent output


def test_trunk_output_depends_on_pretrained_weights(tmp_path: Path):
    """Different imported weights give different features (the store really feeds the trunk)."""
    for seed, name in ((0, "a"), (1, "b")):
        torch.save(randomised("resnet18", seed=seed).state_dict(), tmp_path / f"{name}.pth")
        import_weights(tmp_path / f"{name}.pth", "resnet18", name, tmp_path / "store")
    x = torch.rand(2, 3, 64, 64)
    outs = []
    for name in ("a", "b"):
        trunk = build_trunk("resnet18")
        load_pretrained(trunk, tmp_path / "store", name, "resnet18")
        outs.append(trunk.eval()(x))
    assert not torch.allclose(outs[0], outs[1])


def test_footprint():
    for arch, n in TORCHVISION_PARAMS.items():
        fp = footprint(arch, 224)
        classifier = sum(p.numel() for k, p in REFERENCES[arch]().named_parameters()
                         if k.startswith(BACKBONES[arch].classifier_prefix))
        assert fp.parameters == n - classifier
        assert fp.activation_bytes_per_sample() == 4 * fp.activation_elements_per_sample
    small, big = footprint("resnet18", 112), footprint("resnet18", 224)
    assert 3.5 < big.activation_elements_per_sample / small.activation_elements_per_sample < 4.5
    assert footprint("resnet50", 224).activation_elements_per_sample > big.activation_elements_per_sample


@pytest.mark.parametrize("arch", list(BACKBONES))
def test_trunk_trains(arch):
    """Every parameter gets a gradient (NCHW: the trainer never runs a CPU step this small in channels_last, see
    service/ml/precision.py)."""
    trunk = build_trunk(arch).train()
    out = trunk(torch.rand(2, 3, 64, 64))
    F.mse_loss(out, torch.zeros_like(out)).backward()
    assert all(p.grad is not None for p in trunk.parameters())


def test_cli_import_then_identical_outputs(tmp_path: Path):
    """`headwise weights import FILE --arch A --name N` (a real process), then the engine's trunk matches."""
    arch = "mobilenet_v3_large"
    ref = randomised(arch, num_classes=7, seed=3)
    torch.save(ref.state_dict(), tmp_path / "ref.pth")
    env = {**os.environ, "HEADWISE_DATA_DIR": str(tmp_path / "data"), "HEADWISE_WEIGHTS_DIR": str(tmp_path / "w")}
    cmd = [sys.executable, "-m", "service.cli", "weights", "import", str(tmp_path / "ref.pth"), "--arch", arch,
           "--name", "tv-ref"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"installed 'tv-ref' ({arch}" in done.stdout
    listed = subprocess.run([sys.executable, "-m", "service.cli", "weights", "list"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "tv-ref" in listed.stdout and arch in listed.stdout
    wrong = subprocess.run(cmd[:-3] + ["resnet50", "--name", "x"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert wrong.returncode == 2 and "does not fit resnet50" in wrong.stderr

    trunk = build_trunk(arch)
    load_pretrained(trunk, tmp_path / "w", "tv-ref", arch)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        want, _ = pooled_features(ref, x)
        torch.testing.assert_close(trunk.eval()(x), want, rtol=0, atol=0)


@pytest.mark.parametrize("arch", list(BACKBONES))
def test_trunk_exports_to_onnx(arch):
    """Every trunk exports (TorchScript-based exporter, opset 17, dynamic batch) and ONNX Runtime reproduces it."""
    ort = pytest.importorskip("onnxruntime")
    import io
    import warnings

    trunk = build_trunk(arch).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(trunk, (torch.rand(1, 3, 64, 64),), buf, input_names=["x"], output_names=["f"],
                          dynamic_axes={"x": {0: "batch"}, "f": {0: "batch"}}, opset_version=17, dynamo=False)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 64, 64)
    (got,) = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        want = trunk(x).numpy()
    assert got.shape == want.shape == (3, BACKBONES[arch].feature_dim)
    assert abs(got - want).max() < 1e-4
