import pytest
import torch
from torch import nn

from service.ml.network import MultiTaskCNN
from service.ml.spec import parse_spec


def make_spec(channels=3, image_size=16, depth=2, width=4, names=("category", "is_big", "size")):
    return parse_spec({
        "tasks": [
            {"name": names[0], "type": "multiclass", "classes": ["none", "circle", "square"]},
            {"name": names[1], "type": "binary"},
            {"name": names[2], "type": "regression", "gate": {"task": names[0], "classes": ["circle", "square"]}},
        ],
        "model": {"image_size": image_size, "channels": channels, "width": width, "depth": depth,
                  "head_hidden": 8, "dropout": 0.1},
    })


@pytest.mark.parametrize("channels", [1, 3])
def test_output_shapes_and_channels_last(channels):
    torch.manual_seed(0)
    spec = make_spec(channels=channels)
    net = MultiTaskCNN(spec).to(memory_format=torch.channels_last)
    x = torch.rand(2, channels, 16, 16).contiguous(memory_format=torch.channels_last)
    out = net(x)
    assert list(out) == ["category", "is_big", "size"]
    assert out["category"].shape == (2, 3)
    assert out["is_big"].shape == (2,)
    assert out["size"].shape == (2,)
    net.eval()
    with torch.no_grad():
        plain = net(x.contiguous())
        cl = net(x)
    torch.testing.assert_close(plain["category"], cl["category"], rtol=1e-4, atol=1e-5)


def test_batch_of_one_keeps_batch_dim():
    net = MultiTaskCNN(make_spec()).eval()
    out = net(torch.rand(1, 3, 16, 16))
    assert out["is_big"].shape == (1,) and out["category"].shape == (1, 3)


def test_downsampling_and_channel_cap():
    net = MultiTaskCNN(make_spec(image_size=64, depth=6, width=4))
    # blocks 1, 3, 5 downsample: 4 -> 8 -> 16 -> 16 (cap width*4)
    assert [b.conv2.out_channels for b in net.blocks] == [4, 8, 8, 16, 16, 16]
    assert [b.conv1.stride[0] for b in net.blocks] == [1, 2, 1, 2, 1, 2]
    assert net.stem[0].stride == (2, 2)  # image_size >= 64
    assert net.feature_dim == 16
    out = net(torch.rand(2, 3, 64, 64))
    assert out["category"].shape == (2, 3)
    assert MultiTaskCNN(make_spec(image_size=16)).stem[0].stride == (1, 1)


def test_deterministic_init():
    torch.manual_seed(3)
    a = MultiTaskCNN(make_spec()).state_dict()
    torch.manual_seed(3)
    b = MultiTaskCNN(make_spec()).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_parameter_groups_partition_and_heads_have_no_batchnorm():
    net = MultiTaskCNN(make_spec())
    trunk = {id(p) for p in net.trunk_parameters()}
    heads = [{id(p) for p in net.head_parameters(t)} for t in ("category", "is_big", "size")]
    assert all(h and not (h & trunk) for h in heads)
    assert not (heads[0] & heads[1])
    assert trunk | heads[0] | heads[1] | heads[2] == {id(p) for p in net.parameters()}
    for t in ("category", "is_big", "size"):
        assert not any(isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) for m in net.head(t).modules())
    with pytest.raises(KeyError, match="tasks are: category, is_big, size"):
        net.head_parameters("nope")


def test_loss_on_one_head_leaves_other_heads_without_grad():
    net = MultiTaskCNN(make_spec())
    net(torch.rand(2, 3, 16, 16))["size"].sum().backward()
    assert all(p.grad is None for p in net.head_parameters("category"))
    assert all(p.grad is not None for p in net.head_parameters("size"))


def test_task_names_that_clash_with_module_attributes():
    net = MultiTaskCNN(make_spec(names=("type", "training", "forward")))
    out = net(torch.rand(2, 3, 16, 16))
    assert set(out) == {"type", "training", "forward"}


def test_multiclass_needs_classes():
    spec = parse_spec({"tasks": [{"name": "c", "type": "multiclass"}], "model": {"image_size": 16, "width": 4}})
    with pytest.raises(ValueError, match="classes are not known"):
        MultiTaskCNN(spec)
