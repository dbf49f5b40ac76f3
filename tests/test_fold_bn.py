"""A frozen teacher's BatchNorms folded into its convolutions: same outputs, no norm left."""

import copy

import pytest
import torch
from torch import nn

from nanodet.continual.methods.teacher import Teacher
from nanodet.model.arch import build_model
from nanodet.model.module.conv import ConvModule, DepthwiseConvModule
from nanodet.model.module.fold_bn import fold_batchnorm
from nanodet.util import read_config


def with_statistics(model, size=64, channels=3):
    """Running statistics away from (0, 1) and affine parameters away from (1, 0)."""
    model.train()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
        for _ in range(3):
            model(torch.randn(2, channels, size, size) * 2 + 1)
    return model.eval()


def test_every_norm_of_nanodet_plus_folds_and_the_outputs_stay():
    model = with_statistics(build_model(read_config("cfg/synthetic.yml").model))
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == norms == 106
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)


def test_a_norm_is_folded_only_into_the_conv_it_follows():
    # DepthwiseConvModule registers depthwise, pointwise, then both norms: pairs come from its order
    depthwise = DepthwiseConvModule(8, 8, 3, padding=1, norm_cfg={"type": "BN"}, activation="LeakyReLU")
    before_conv = ConvModule(8, 8, 1, norm_cfg={"type": "BN"}, order=("norm", "conv", "act"))
    counts = []
    for module in (depthwise, before_conv):
        reference = with_statistics(nn.Sequential(module), size=16, channels=8)
        folded = copy.deepcopy(reference)
        counts.append(fold_batchnorm(folded))
        x = torch.randn(2, 8, 16, 16)
        with torch.no_grad():
            torch.testing.assert_close(folded(x), reference(x), atol=1e-5, rtol=1e-5)
    assert counts == [2, 0]  # a norm applied before its conv is left as it is
    assert isinstance(folded[0].norm, nn.BatchNorm2d)


def test_a_training_model_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))


def test_the_teacher_is_folded_and_reports_the_copied_models_parameters():
    model = build_model(read_config("cfg/synthetic.yml").model)
    teacher = Teacher(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in teacher.model.modules())
    assert teacher.num_parameters() == sum(p.numel() for p in model.parameters())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the student keeps its own
