"""Upstream NanoDet's public API, as a NanoDet user's code calls it, over this package's parts."""

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from torchvision.ops import batched_nms as torchvision_batched_nms
from torchvision.ops import nms as torchvision_nms

from nanodet.data.collate import collate_function
from nanodet.data.transform.warp import warp_and_resize
from nanodet.evaluator import CocoDetectionEvaluator, VOCDetectionEvaluator
from nanodet.model.complexity import count_macs, count_parameters
from nanodet.model.head.nanodet_plus_head import multiclass_nms as classwise_nms
from nanodet.model.module.nms import batched_nms, multiclass_nms
from nanodet.optim import build_optimizer
from nanodet.util import CfgNode, ConfigError, get_model_complexity_info, load_config, read_config
from nanodet.util import yacs

ROOT = Path(__file__).resolve().parents[1]
NMS_CFG = dict(type="nms", iou_threshold=0.6)


def random_candidates(n=200, num_classes=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(n, 2, generator=generator) * 100
    boxes = torch.cat([corners, corners + 10 + torch.rand(n, 2, generator=generator) * 30], dim=1)
    return boxes, torch.rand(n, num_classes, generator=generator)


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(8, 4, 1)))


# --- nanodet.model.module.nms ------------------------------------------------------------------
def test_multiclass_nms_drops_the_background_column_and_matches_the_package_nms():
    boxes, scores = random_candidates()
    background = torch.full((len(boxes), 1), 0.99)  # would win every prior if it were a class
    dets, labels = multiclass_nms(boxes, torch.cat([scores, background], dim=1), 0.3, NMS_CFG, max_num=50)
    expected_dets, expected_labels = classwise_nms(boxes, scores, 0.3, 0.6, 50)
    assert 0 < len(dets) <= 50 and labels.max() < scores.shape[1]
    torch.testing.assert_close(dets, expected_dets)
    torch.testing.assert_close(labels, expected_labels)


def test_multiclass_nms_multiplies_score_factors_in_before_the_threshold():
    boxes, scores = random_candidates()
    factors = torch.rand(len(boxes), generator=torch.Generator().manual_seed(1))
    padded = torch.cat([scores, torch.zeros(len(boxes), 1)], dim=1)
    dets, labels = multiclass_nms(boxes, padded, 0.3, NMS_CFG, score_factors=factors)
    expected_dets, expected_labels = classwise_nms(boxes, scores * factors[:, None], 0.3, 0.6)
    torch.testing.assert_close(dets, expected_dets)
    torch.testing.assert_close(labels, expected_labels)
    assert len(dets) < len(multiclass_nms(boxes, padded, 0.3, NMS_CFG)[0])  # the factors (< 1) did cut


@pytest.mark.parametrize("nms_cfg, message", [
    (dict(type="soft_nms", iou_threshold=0.5), "type 'soft_nms' is not supported"),
    (dict(type="nms"), "needs an iou_threshold"),
    (dict(type="nms", iou_threshold=0.5, sigma=0.5), r"unknown keys \['sigma'\]"),
])
def test_nms_cfg_other_than_hard_nms_fails_clearly(nms_cfg, message):
    boxes, scores = random_candidates(10)
    with pytest.raises(ValueError, match=message):
        multiclass_nms(boxes, scores, 0.1, nms_cfg)


def test_batched_nms_returns_upstreams_dets_and_keep():
    boxes, scores = random_candidates(num_classes=1)
    scores = scores[:, 0]
    classes = torch.arange(len(boxes)) % 3
    dets, keep = batched_nms(boxes, scores, classes, NMS_CFG)
    torch.testing.assert_close(keep, torchvision_batched_nms(boxes, scores, classes, 0.6))
    torch.testing.assert_close(dets, torch.cat([boxes[keep], scores[keep, None]], dim=1))
    _, agnostic = batched_nms(boxes, scores, classes, {**NMS_CFG, "class_agnostic": True})
    torch.testing.assert_close(agnostic, torchvision_nms(boxes, scores, 0.6))
    assert len(agnostic) < len(keep)


# --- nanodet.optim.build_optimizer -------------------------------------------------------------
def weight_decays(optimizer):
    return {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}


def test_build_optimizer_without_extras_is_one_group_over_every_parameter():
    net = tiny_net()
    optimizer = build_optimizer(net, {"name": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4})
    assert type(optimizer) is torch.optim.SGD and len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["params"] == list(net.parameters())
    assert optimizer.param_groups[0]["momentum"] == 0.9


def test_no_norm_decay_and_no_bias_decay_zero_the_decay_of_exactly_those_parameters():
    net = tiny_net()
    config = {"name": "AdamW", "lr": 0.001, "weight_decay": 0.05, "no_norm_decay": True}
    decays = weight_decays(build_optimizer(net, config))
    assert len(decays) == len(list(net.parameters()))
    bn = net[1]
    assert decays[id(bn.weight)] == decays[id(bn.bias)] == 0.0
    assert decays[id(net[0].weight)] == decays[id(net[0].bias)] == 0.05
    decays = weight_decays(build_optimizer(net, {**config, "no_norm_decay": False, "no_bias_decay": True}))
    assert decays[id(net[0].bias)] == decays[id(net[3][0].bias)] == decays[id(bn.bias)] == 0.0
    assert decays[id(net[0].weight)] == decays[id(bn.weight)] == 0.05


def test_param_level_cfg_scales_lr_and_decay_by_name_and_frozen_parameters_are_left_out():
    net = tiny_net()
    net[1].weight.requires_grad_(False)
    config = {"name": "SGD", "lr": 0.1, "weight_decay": 1e-4, "param_level_cfg": {"3.0.": {"lr_mult": 0.1,
                                                                                             "decay_mult": 2}}}
    optimizer = build_optimizer(net, config)
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    assert id(net[1].weight) not in groups and len(groups) == len(list(net.parameters())) - 1
    for param in net[3][0].parameters():
        assert groups[id(param)]["lr"] == pytest.approx(0.01) and groups[id(param)]["weight_decay"] == 2e-4
    assert groups[id(net[0].weight)]["lr"] == 0.1 and groups[id(net[0].weight)]["weight_decay"] == 1e-4


@pytest.mark.parametrize("config, message", [
    ({"name": "Adamm", "lr": 0.1}, r"unknown optimizer name 'Adamm'; torch.optim has \[.*'Adam'"),
    ({"name": "SGD", "lr": 0.1, "betas": [0.9, 0.99]}, r"SGD does not take \['betas'\]"),
    ({"name": "SGD", "lr": 0.1, "param_level_cfg": {"head": {"lr_scale": 2}}}, r"unknown keys \['lr_scale'\]"),
    ({"lr": 0.1}, "needs a 'name'"),
])
def test_bad_optimizer_configs_fail_with_one_line_naming_the_value(config, message):
    with pytest.raises(ValueError, match=message) as failure:
        build_optimizer(tiny_net(), config)
    assert "\n" not in str(failure.value)


# --- nanodet.data.collate.collate_function -----------------------------------------------------
def samples(widths):
    return [{"img": torch.full((3, 8, w), float(i)), "gt_bboxes": np.zeros((i, 4), np.float32),
             "img_info": {"file_name": f"{i}.jpg", "height": 8, "id": i}} for i, w in enumerate(widths)]


def test_collate_function_stacks_images_and_collates_the_rest_like_naive_collate():
    batch = collate_function(samples([10, 10, 10]))
    assert batch["img"].shape == (3, 3, 8, 10)
    assert batch["img"][:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0]
    assert [b.shape for b in batch["gt_bboxes"]] == [(0, 4), (1, 4), (2, 4)]
    assert batch["img_info"]["file_name"] == ["0.jpg", "1.jpg", "2.jpg"]
    assert batch["img_info"]["id"].tolist() == [0, 1, 2]


def test_collate_function_names_the_field_whose_images_differ_in_size():
    with pytest.raises(ValueError, match=r"\['img'\].*collate_and_pad"):
        collate_function(samples([10, 12]))


# --- nanodet.data.transform.warp.warp_and_resize -----------------------------------------------
def test_warp_and_resize_moves_image_and_box_as_its_warp_matrix_says():
    img = np.zeros((100, 200, 3), np.uint8)
    img[10:50, 20:60] = 255  # the box's content
    meta = {"img": img, "gt_bboxes": np.array([[20, 10, 60, 50]], np.float32),
            "gt_bboxes_ignore": np.zeros((0, 4), np.float32)}
    out = warp_and_resize(meta, {"flip": 1.0, "normalize": [[0] * 3, [1] * 3]}, (320, 320), keep_ratio=True)
    # Flipped about the centre (x -> 200 - x), scaled by min(320/200, 320/100) = 1.6 and
    # letterboxed in the full 320x320: 80 pixels of border above and below.
    assert out["img"].shape == (320, 320, 3)
    np.testing.assert_allclose(out["gt_bboxes"], [[224, 96, 288, 160]], atol=1e-3)
    np.testing.assert_allclose(out["warp_matrix"], [[-1.6, 0, 320], [0, 1.6, 80], [0, 0, 1]], atol=1e-6)
    assert out["img"][100:156, 228:284].min() == 255 and out["img"][:80].max() == 0
    assert out["gt_bboxes_ignore"].shape == (0, 4)


def test_warp_and_resize_refuses_keys_it_does_not_know():
    with pytest.raises(ValueError, match=r"unknown warp_kwargs \['rotate'\]"):
        warp_and_resize({"img": np.zeros((8, 8, 3), np.uint8)}, {"rotate": 10}, (16, 16))


# --- nanodet.util.get_model_complexity_info ----------------------------------------------------
def test_model_complexity_info_counts_as_the_package_counter_does():
    net = tiny_net().train()
    flops, params = get_model_complexity_info(net, (3, 32, 32), print_per_layer_stat=False, as_strings=False)
    assert params == count_parameters(net)["params"] == (8 * 3 * 9 + 8) + 2 * 8 + (4 * 8 + 4)
    assert flops == count_macs(net, torch.zeros(1, 3, 32, 32))[0] > 0
    assert net.training  # put back in its mode


def test_model_complexity_info_strings_and_per_layer_table():
    net = tiny_net()
    out = io.StringIO()
    flops, params = get_model_complexity_info(net, (3, 32, 32), ost=out)
    assert flops == "0.0 GFLOPs" and params == "276"
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("0 (Conv2d): 224 params") and lines[-1] == "total: 276 params, 0.0 GFLOPs"
    constructed, _ = get_model_complexity_info(net, (3, 64, 64), print_per_layer_stat=False, as_strings=False,
                                               input_constructor=lambda shape: {"input": torch.zeros(2, *shape)})
    assert constructed == 2 * count_macs(net, torch.zeros(1, 3, 64, 64))[0]


# --- nanodet.util.yacs.CfgNode -----------------------------------------------------------------
def test_yacs_cfgnode_is_the_package_node_and_loads_through_its_reader():
    assert yacs.CfgNode is CfgNode
    node = CfgNode()
    node.merge_from_file(ROOT / "cfg/VOC.yml")
    assert node.model.arch.backbone.name == "ShuffleNetV2" and node.config_path.endswith("VOC.yml")
    assert node == read_config(ROOT / "cfg/VOC.yml")


def test_merge_from_file_merges_over_the_nodes_values_and_checks_the_keys(tmp_path):
    node = read_config(ROOT / "cfg/VOC.yml")
    node.schedule.val_intervals = 3
    update = tmp_path / "update.yml"
    update.write_text("schedule:\n  total_epochs: 7\n")
    node.merge_from_file(update)
    assert node.schedule.total_epochs == 7 and node.schedule.val_intervals == 3
    assert node.model.arch.backbone.name == "ShuffleNetV2"
    update.write_text("schedule:\n  total_epoch: 7\n")
    with pytest.raises(ConfigError, match=r"key 'schedule\.total_epoch'; did you mean 'schedule\.total_epochs'"):
        node.merge_from_file(update)


def test_merge_from_list_changes_values_and_a_bad_key_or_value_errors():
    node = read_config(ROOT / "cfg/VOC.yml")
    node.merge_from_list(["schedule.total_epochs", 5, "device.batchsize_per_gpu", "8"])
    assert node.schedule.total_epochs == 5 and node.device.batchsize_per_gpu == 8
    with pytest.raises(ConfigError, match=r"unknown key 'schedule\.total_epoch'; did you mean"):
        node.merge_from_list(["schedule.total_epoch", 3])
    with pytest.raises(ConfigError, match=r"log\.interval must be a number of steps >= 1, got 0"):
        node.merge_from_list(["log.interval", 0])
    with pytest.raises(ConfigError, match="odd number"):
        node.merge_from_list(["log.interval"])
    assert node.schedule.total_epochs == 5 and node.log.interval == 50  # failed merges changed nothing
    part = CfgNode({"lr": 0.1})  # not a whole config: only keys it holds (yacs' rule)
    assert part.merge_from_list(["lr", "0.5"]).lr == 0.5
    with pytest.raises(ConfigError, match="unknown key 'lrr'; did you mean 'lr'"):
        part.merge_from_list(["lrr", 1])


def test_freeze_refuses_changes_everywhere_until_defrost_and_clone_is_independent():
    node = CfgNode({"schedule": {"optimizer": {"lr": 0.1}}, "ids": [{"a": 1}]}).freeze()
    assert node.is_frozen() and node.schedule.optimizer.is_frozen()
    for change in (lambda: setattr(node.schedule.optimizer, "lr", 1), lambda: node.ids[0].update(a=2),
                   lambda: node.pop("ids"), lambda: node.merge_from_list(["schedule.optimizer.lr", 1])):
        with pytest.raises(AttributeError, match="frozen"):
            change()
    clone = node.clone()
    assert clone == node and clone.is_frozen() and clone.schedule is not node.schedule
    node.defrost().schedule.optimizer.lr = 0.2
    assert node.schedule.optimizer.lr == 0.2 and clone.schedule.optimizer.lr == 0.1


def test_load_config_fills_a_frozen_node_as_upstreams_does():
    node = CfgNode().freeze()
    load_config(node, ROOT / "cfg/VOC.yml")
    assert node.model.arch.backbone.name == "ShuffleNetV2" and node.is_frozen()


# --- evaluate(results, save_dir, rank) ---------------------------------------------------------
def one_image_dataset():
    record = SimpleNamespace(id=1, file_name="1.jpg", height=100, width=100, boxes=[[10, 10, 50, 50]],
                             labels=[0], difficult=[False])
    return SimpleNamespace(class_names=["cat", "dog"], records=[record])


@pytest.mark.parametrize("evaluator_cls", [CocoDetectionEvaluator, VOCDetectionEvaluator])
def test_evaluate_with_a_rank_writes_upstreams_results_file(evaluator_cls, tmp_path):
    results = {1: {0: [[10, 10, 50, 50, 0.9]]}}
    metrics = evaluator_cls(one_image_dataset()).evaluate(results, str(tmp_path), 0)
    assert metrics["mAP"] == pytest.approx(1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "results0.json"]
    assert len(json.loads((tmp_path / "results0.json").read_text())) == 1
    evaluator_cls(one_image_dataset()).evaluate(results, str(tmp_path / "default"), class_ids=[0])
    assert sorted(p.name for p in (tmp_path / "default").iterdir()) == ["detections.json", "metrics.json"]
    with pytest.raises(ValueError, match="rank must be"):
        evaluator_cls(one_image_dataset()).evaluate(results, str(tmp_path), [0])  # class_ids is keyword-only
