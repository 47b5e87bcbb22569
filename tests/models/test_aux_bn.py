"""Auxiliary batch norm (AdvAmd, RECIPES.md): main-BN mode is the original model, statistics stay apart, export
restores it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hardenctl.models import create_timm_model
from hardenctl.models.aux_bn import DualBatchNorm, add_aux_bn, bn_route, dual_bn_layers, remove_aux_bn


def timm_net(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return create_timm_model(arch, num_classes=5, in_chans=3)


def sync_bn_net() -> nn.Module:
    return nn.SyncBatchNorm.convert_sync_batchnorm(timm_net("test_resnet"))


NETS = {
    "BatchNorm2d": lambda: timm_net("test_resnet"),
    "BatchNormAct2d": lambda: timm_net("test_efficientnet"),
    "SyncBatchNorm": sync_bn_net,
}


def bn_kinds(net: nn.Module) -> set[str]:
    return {type(m.main).__name__ for m in dual_bn_layers(net)}


@pytest.mark.parametrize("kind", NETS)
def test_main_bn_outputs_equal_the_original_model_in_eval_and_train_mode(kind):
    original, converted = NETS[kind](), NETS[kind]()
    converted.load_state_dict(original.state_dict())
    assert add_aux_bn(converted) > 0 and kind in bn_kinds(converted)
    x = torch.rand(4, 3, 32, 32)
    for train in (False, True):
        original.train(train), converted.train(train)
        assert torch.equal(converted(x), original(x))


@pytest.mark.parametrize("kind", NETS)
def test_benign_batches_update_only_main_statistics_and_aux_batches_only_auxiliary(kind):
    net = NETS[kind]()
    add_aux_bn(net)
    layers = dual_bn_layers(net)
    net.train()
    net(torch.rand(4, 3, 32, 32))
    assert all(int(m.main.num_batches_tracked) == 1 and int(m.aux.num_batches_tracked) == 0 for m in layers)
    with bn_route(net, "aux"):
        net(torch.rand(4, 3, 32, 32))
        net(torch.rand(4, 3, 32, 32))
    assert all(int(m.main.num_batches_tracked) == 1 and int(m.aux.num_batches_tracked) == 2 for m in layers)
    assert all(not torch.equal(m.main.running_mean, m.aux.running_mean) for m in layers)
    assert all(m.route == "main" for m in layers)  # the route is restored after the block


def test_export_restores_the_original_keys_and_equals_main_bn_mode():
    original = timm_net("test_efficientnet")
    keys = list(original.state_dict())
    net = timm_net("test_efficientnet")
    add_aux_bn(net)
    assert all(".main." in k or ".aux." in k for k in net.state_dict() if "bn" in k)
    net.train()
    with bn_route(net, "aux"):
        net(torch.rand(8, 3, 32, 32) * 3)  # move the auxiliary statistics away from the main ones
    net.eval()
    x = torch.rand(4, 3, 32, 32)
    main_mode = net(x)
    with bn_route(net, "aux"):
        assert not torch.allclose(net(x), main_mode)
    remove_aux_bn(net)
    assert list(net.state_dict()) == keys and not dual_bn_layers(net)
    assert torch.equal(net(x), main_mode)
    plain = timm_net("test_efficientnet")
    plain.load_state_dict(net.state_dict())  # loads in plain timm, strict
    assert torch.equal(plain.eval()(x), main_mode)


def test_a_model_without_batchnorm_gets_no_twins_and_converting_twice_adds_none():
    torch.manual_seed(0)
    vit = nn.Sequential(nn.Flatten(), nn.LayerNorm(12), nn.Linear(12, 3))
    assert add_aux_bn(vit) == 0 and not dual_bn_layers(vit)
    net = timm_net("test_resnet")
    first = add_aux_bn(net)
    assert first > 0 and add_aux_bn(net) == 0 and len(dual_bn_layers(net)) == first
    assert not any(isinstance(m.main, DualBatchNorm) for m in dual_bn_layers(net))


def test_route_is_restored_after_an_error_and_bad_routes_are_refused():
    net = timm_net("test_resnet")
    add_aux_bn(net)
    with pytest.raises(RuntimeError):
        with bn_route(net, "aux"):
            raise RuntimeError("boom")
    assert all(m.route == "main" for m in dual_bn_layers(net))
    with pytest.raises(ValueError):
        with bn_route(net, "adv"):
            pass
