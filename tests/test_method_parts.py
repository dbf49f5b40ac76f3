"""Methods are presets of parts; the common settings add parts to any method."""

import json

import pytest
import torch

from fixtures_continual import tiny_cfg, tiny_runner
from nanodet.continual import build_method, parse_scenario
from nanodet.continual.data import TaskData
from nanodet.continual.methods import (DropBackground, FeatureDistillation, FrozenBackbone, ImageReplay, LatentBuffer,
                                       LogitDistillation, Part, PseudoLabels, StudentOutputs, TaskContext)
from nanodet.continual.methods.distillation import ALL_CHANNELS, NOT_NEW_CLASSES
from nanodet.continual.report import run_label
from nanodet.model.arch import build_model


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("parts") / "tiny_synthetic"


@pytest.fixture(scope="module")
def setup(data_dir):
    cfg = tiny_cfg(data_dir)
    scenario = parse_scenario("[[disc, ring, square], [triangle, diamond]]", cfg.class_names)
    return cfg, scenario, TaskData(cfg, scenario)


def context(setup, t):
    cfg, scenario, data = setup
    return TaskContext(t, scenario, cfg, train_dataset=data.train_dataset(t), seed=3)


def kinds(method):
    return [type(part) for part in method.parts]


def test_each_preset_is_its_parts():
    assert kinds(build_method("naive")) == []
    assert kinds(build_method("lwf")) == [LogitDistillation]
    assert kinds(build_method("sid")) == [LogitDistillation, FeatureDistillation]
    assert kinds(build_method("ld")) == [FrozenBackbone, LogitDistillation, FeatureDistillation]
    assert kinds(build_method("replay")) == [ImageReplay]
    assert kinds(build_method("latent_replay")) == [FrozenBackbone, LatentBuffer]
    assert build_method("lwf").parts[0].channels == ALL_CHANNELS
    assert build_method("sid").parts[0].channels == NOT_NEW_CLASSES
    assert build_method("replay", buffer_size=7, buffer_policy="balanced").parts[0].size == 7
    latent = build_method("latent_replay", buffer_size=4)
    assert latent.parts[1].frozen_backbone is latent.parts[0]  # the buffer stores that backbone's maps


def test_the_common_settings_add_their_parts_to_any_method():
    method = build_method("sid", pseudo_labels=0.4, drop_background=True)
    assert kinds(method) == [LogitDistillation, FeatureDistillation, PseudoLabels, DropBackground]
    assert method.parts[2].score == 0.4 and method.step_capturable()
    assert kinds(build_method("ld", buffer_size=6)) == [FrozenBackbone, LogitDistillation, FeatureDistillation,
                                                        ImageReplay]
    assert build_method("ld", buffer_size=6).step_capturable()  # an image buffer only changes the batches
    assert build_method("naive", pseudo_labels=0.5).describe() == {"method": "naive", "pseudo_labels": 0.5,
                                                                   "pseudo_label_iou": 0.5}


def test_a_teacher_exists_when_a_part_needs_one(setup):
    model = build_model(setup[0].model)
    for name, settings, expected in (("naive", {}, False), ("replay", {}, False), ("lwf", {}, True),
                                     ("naive", {"pseudo_labels": 0.5}, True)):
        method = build_method(name, **settings)
        method.on_task_start(context(setup, 0), model)
        assert method.teacher is None, name  # nothing to distil from at task 0
        method.on_task_start(context(setup, 1), model)
        assert (method.teacher is not None) == expected, (name, settings)


class RecordingHead(torch.nn.Module):
    num_classes = 20

    def __init__(self):
        super().__init__()
        self.calls = []

    def loss(self, preds, batch, **options):
        self.calls.append(options)
        return preds.sum(), {}


def test_drop_background_removes_the_negative_term_from_task_1_on(setup):
    model = torch.nn.Module()
    model.head = RecordingHead()
    outputs = StudentOutputs(torch.zeros(1, 3, 4))
    for method in (build_method("naive"), build_method("naive", drop_background=True)):
        for t in (0, 1):
            method.detection_loss(context(setup, t), model, outputs, {})
    assert model.head.calls == [{}, {}, {}, {"background": False}]


def test_erd_keeps_the_background_term_of_every_class_but_the_old_ones(setup):
    model = torch.nn.Module()
    model.head = RecordingHead()
    outputs = StudentOutputs(torch.zeros(1, 3, 4))
    build_method("naive", erd=True).detection_loss(context(setup, 0), model, outputs, {})
    build_method("naive", erd=True).detection_loss(context(setup, 1), model, outputs, {})
    build_method("naive", erd=True, drop_background=True).detection_loss(context(setup, 1), model, outputs, {})
    at_task_0, at_task_1, with_drop = model.head.calls
    assert at_task_0 == {} and with_drop == {"background": False}  # dropping it wins: no class keeps it
    assert torch.equal(at_task_1["background"], torch.arange(20) >= 3)  # task 1: disc, ring, square are old


class ConstantTerm(Part):
    """A part of one's own: a named loss term and a module kept in eval mode."""

    def losses(self, context, model, batch, student, teacher):
        return {"loss_constant": student.preds.new_tensor(2.0)}

    def frozen_modules(self, model):
        return [model.fpn]


def test_a_part_of_ones_own_joins_any_method(setup):
    model = build_model(setup[0].model)
    method = build_method("ld", freeze_backbone_from=0)
    method.parts.append(ConstantTerm())
    method.on_task_start(context(setup, 1), model)
    img = torch.zeros(1, 3, 128, 128)
    student, _ = method.forward_student(context(setup, 1), model, {"img": img})
    teacher = method.forward_teacher(img, student)
    terms = method.extra_losses(context(setup, 1), model, {}, student, teacher)
    assert list(terms) == ["loss_logit_distill", "loss_feature_distill", "loss_constant"]
    assert float(terms["loss_constant"]) == 2.0
    assert method.frozen_modules(model) == [model.backbone, model.fpn]


def test_latent_distillation_with_a_replay_buffer_needs_no_new_class(data_dir, tmp_path):
    results = tiny_runner(data_dir, tmp_path / "run", method="ld", buffer_size=6).run()
    assert results["finished"] and results["buffer_bytes"] >= 6 * 128 * 128 * 3
    assert len(json.loads((tmp_path / "run" / "task_1" / "buffer.json").read_text())) == 6
    assert results["method"] == {"method": "ld", "buffer_size": 6, "buffer_policy": "random", "alpha": 1.0,
                                 "beta": 1.0, "freeze_backbone_from": None}
    assert run_label(results) == "ld+replay buffer 6"  # tables and plots tell it from plain LD
    second = results["per_task"][1]
    assert second["trainable_parameters"] < second["parameters_in_memory"]  # frozen backbone, teacher's head


def test_run_labels_name_every_optional_part():
    def labelled(scenario="15p1", tasks=(["a"], ["b"]), **method):
        return run_label({"scenario": scenario, "tasks": list(tasks), "method": method})

    assert labelled(method="naive", erd=True) == "naive+ERD"
    assert labelled(method="lwf", buffer_size=250, buffer_policy="ocdm") == "lwf+replay buffer 250 (ocdm)"
    assert labelled(method="replay", buffer_size=250, buffer_policy="balanced") == "replay (balanced)"
    assert labelled(method="replay", buffer_size=250, buffer_policy="random") == "replay"
    assert (labelled(method="ld", buffer_size=250, buffer_policy="ocdm", label_propagation=0.5)
            == "ld+replay buffer 250 (ocdm)+label propagation 0.5")
    assert labelled(method="ld", drop_background=True) == "ld+drop-background"
    assert labelled(tasks=(["a"],), method="naive") == "base"
    assert labelled(scenario="joint", tasks=(["a", "b"],), method="naive") == "joint"
