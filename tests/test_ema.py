import itertools
import math

import pytest
import torch
import torch.nn as nn

from nanodet.model.weight_averager import ExpMovingAverager, build_weight_averager


class Tiny(nn.Module):
    def __init__(self, weight, buffer):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weight))
        self.register_buffer("stat", torch.tensor(buffer))


def test_first_update_weights_new_value_almost_fully():
    model = Tiny([1.0, 2.0], [10.0])
    ema = ExpMovingAverager(decay=0.9998)
    ema.load_from(model)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([3.0, 6.0]))
        model.stat.fill_(20.0)
    ema.update(model, 0)

    w = 0.9998 * math.exp(-1 / 2000) + 0.0002  # weight of the new value at step 0
    assert w == pytest.approx(0.99950022, abs=1e-8)
    assert torch.allclose(ema.state["weight"], torch.tensor([1 + 2 * w, 2 + 4 * w]))
    assert torch.allclose(ema.state["stat"], torch.tensor(10 + 10 * w))


def test_late_update_moves_by_one_minus_decay():
    model = Tiny([0.0], [0.0])
    ema = ExpMovingAverager(decay=0.9)
    ema.load_from(model)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, 100_000)  # exp(-50) is negligible: the weight is 1 - decay
    assert ema.state["weight"].item() == pytest.approx(0.1, abs=1e-6)
    ema.update(model, 100_001)
    assert ema.state["weight"].item() == pytest.approx(0.1 + 0.9 * 0.1, abs=1e-6)


def test_state_is_a_copy_and_apply_to_writes_it_back():
    model = Tiny([1.0], [5.0])
    ema = ExpMovingAverager(decay=0.5, device="cpu")
    ema.load_from(model)
    with torch.no_grad():
        model.weight.fill_(9.0)
    assert ema.state["weight"].item() == 1.0  # not aliased with the model
    ema.apply_to(model)
    assert model.weight.item() == 1.0 and model.stat.item() == 5.0


def test_state_dict_round_trip_and_missing_entry():
    model = Tiny([1.0], [5.0])
    ema = ExpMovingAverager()
    assert not ema.has_inited()
    ema.load_from(model)
    restored = ExpMovingAverager()
    restored.load_state_dict({k: v.clone() for k, v in ema.state_dict().items()})
    assert restored.has_inited() and set(restored.state) == {"weight", "stat"}
    with pytest.raises(KeyError, match="0.weight"):
        restored.apply_to(nn.Sequential(nn.Linear(1, 1)))


def test_decay_outside_unit_interval_is_rejected():
    with pytest.raises(ValueError, match="decay"):
        ExpMovingAverager(decay=1.5)


def test_build_weight_averager_by_name():
    ema = build_weight_averager({"name": "ExpMovingAverager", "decay": 0.99}, device="cpu")
    assert isinstance(ema, ExpMovingAverager) and ema.decay == 0.99 and ema.device == "cpu"
    with pytest.raises(ValueError, match="ExpMovingAverager"):
        build_weight_averager({"name": "SWA"})


def test_to_moves_state_and_later_loads_follow_it():
    model = Tiny([1.0], [5.0])
    ema = ExpMovingAverager(device=None)
    ema.load_from(model)
    ema.to(torch.device("meta"))  # any other device; meta needs no hardware
    assert ema.state["weight"].device.type == "meta"
    ema.load_from(model)
    assert ema.state["stat"].device.type == "meta"


def test_update_of_a_batchnorm_model_matches_the_formula_for_every_tensor():
    """The multi-tensor update equals ``(1 - w) * ema + w * value`` for each parameter and float
    buffer, and truncates the integer ``num_batches_tracked`` as upstream's copy_ did."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
    ema = ExpMovingAverager(decay=0.9)
    ema.load_from(model)
    model.train()
    for _ in range(7):  # move the weights, the running statistics and num_batches_tracked
        model(torch.randn(2, 3, 8, 8)).sum().backward()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in ema.state.items()}
    ema.update(model, 3)
    w = ema.calculate_decay(3)
    current = dict(itertools.chain(model.named_parameters(), model.named_buffers()))
    assert set(ema.state) == set(current)
    for name, value in current.items():
        expected = before[name] * (1 - w) + value.detach() * w
        if value.is_floating_point():
            assert torch.allclose(ema.state[name], expected, atol=1e-6), name
        else:
            assert ema.state[name].dtype == torch.int64
            assert ema.state[name].item() == int(expected.item()) == int(7 * w), name
