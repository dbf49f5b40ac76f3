"""Each continual-learning method does what makes it that method."""

import copy
import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from fixtures_continual import tiny_cfg, tiny_runner
from nanodet.continual import build_method, parse_scenario
from nanodet.continual.data import TaskData
from nanodet.continual.methods import TaskContext, Teacher
from nanodet.continual.methods.buffer import (BufferItem, ImageReplay, ReplayBatchSampler, select_balanced, select_ocdm,
                                              select_random)
from nanodet.continual.methods.distillation import LogitDistillation
from nanodet.continual.methods.frozen_backbone import FrozenBackbone
from nanodet.continual.methods.teacher import feature_distillation, logit_distillation
from nanodet.continual.task import ContinualTask
from nanodet.model.arch import build_model
from nanodet.trainer.builders import build_trainer


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("methods") / "tiny_synthetic"


@pytest.fixture(scope="module")
def setup(data_dir):
    cfg = tiny_cfg(data_dir, extra=["schedule.total_epochs=1"])
    scenario = parse_scenario("[[disc, ring, square], [triangle, diamond], [cross]]", cfg.class_names)
    return cfg, scenario, TaskData(cfg, scenario)


def context_for(setup, t):
    cfg, scenario, data = setup
    return TaskContext(t, scenario, cfg, train_dataset=data.train_dataset(t), seed=3)


def train_one_task(setup, method, model, t, callbacks=()):
    cfg = setup[0]
    context = context_for(setup, t)
    pl.seed_everything(0, verbose=False)
    method.on_task_start(context, model)
    module = ContinualTask(cfg, model, method, context)
    trainer = build_trainer(cfg, context.train_dataset.img_path + "/../../ckpt_unused", device="cpu",
                            save_best=False, enable_progress_bar=False, logger=False, callbacks=callbacks)
    trainer.fit(module)
    return module


def state_copy(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


# --------------------------------------------------------------- Latent Distillation
def test_ld_backbone_is_bitwise_frozen_and_runs_once_per_step(setup):
    cfg = setup[0]
    model = build_model(cfg.model)
    method = build_method("ld", freeze_backbone_from=0)
    before = state_copy(model.backbone)
    calls = []  # passes of the backbone, the model's or its folded copy (FrozenBackbone.folded)
    backbone_type = type(model.backbone)
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, *args: calls.append(1) if type(module) is backbone_type else None)
    try:
        module = train_one_task(setup, method, model, t=1)
    finally:
        hook.remove()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN running stats
    assert any("running_mean" in k for k in before)
    steps = module.trainer.global_step
    assert steps > 0 and len(calls) == steps  # teacher and student share one backbone pass
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("backbone.") for n in trainable)
    optimised = {id(p) for g in module.trainer.optimizers[0].param_groups for p in g["params"]}
    assert optimised == {id(p) for p in model.parameters() if p.requires_grad}
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) < 0.45e6  # neck + head
    # memory: the student plus the teacher's neck and head, no second backbone
    neck_head = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone."))
    assert method.parameters_in_memory(model) == sum(p.numel() for p in model.parameters()) + neck_head


def test_a_frozen_backbone_runs_as_a_copy_with_its_batchnorms_folded(setup):
    cfg = setup[0]
    model = build_model(cfg.model).eval()
    method = build_method("ld")
    method.on_task_start(context_for(setup, 1), model)
    folded = method.feature_backbone(model)
    assert folded is method.part(FrozenBackbone).folded and folded is not model.backbone
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())  # the model's own is kept
    img = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for mine, reference in zip(folded(img), model.backbone(img)):
            torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-4)
    method.on_task_start(context_for(setup, 0), model)  # task 0 trains the backbone: no copy
    assert method.feature_backbone(model) is model.backbone
    compiled_cfg = copy.deepcopy(cfg)
    compiled_cfg.defrost()
    compiled_cfg.device.compile = True
    _, scenario, data = setup
    method.on_task_start(TaskContext(1, scenario, compiled_cfg, train_dataset=data.train_dataset(1), seed=3), model)
    assert method.feature_backbone(model) is model.backbone  # compiling fuses the norms itself


def test_ld_default_freezes_from_task_1_without_pretrained_weights(setup):
    cfg = setup[0]
    method = build_method("ld")
    assert method.part(FrozenBackbone).freeze_task(cfg) == 1
    model = build_model(cfg.model)
    method.on_task_start(context_for(setup, 0), model)
    assert all(p.requires_grad for p in model.backbone.parameters()) and method.teacher is None
    method.on_task_start(context_for(setup, 1), model)
    assert not any(p.requires_grad for p in model.backbone.parameters()) and method.teacher.model.backbone is None


def test_sid_trains_the_backbone(setup):
    model = build_model(setup[0].model)
    before = state_copy(model.backbone)
    train_one_task(setup, build_method("sid"), model, t=1)
    after = model.backbone.state_dict()
    assert not all(torch.equal(before[k], after[k]) for k in before)


# --------------------------------------------------------------- distillation terms
def distill_terms(setup, method_name, student, teacher_model, t=1, **settings):
    if method_name == "ld":
        settings.setdefault("freeze_backbone_from", 0)
    method = build_method(method_name, **settings)
    method.teacher = Teacher(teacher_model, share_backbone=method.teacher_shares_backbone)
    img = torch.randn(2, 3, 64, 64)
    context = context_for(setup, t)
    student.eval()
    outputs, _ = method.forward_student(context, student, {"img": img})
    return method.extra_losses(context, student, {"img": img}, outputs, method.forward_teacher(img, outputs))


@pytest.mark.parametrize("method", ["lwf", "sid", "ld"])
def test_distillation_terms_are_zero_for_equal_and_positive_for_different_models(setup, method):
    torch.manual_seed(0)
    student = build_model(setup[0].model)
    equal = distill_terms(setup, method, student, student)
    assert equal and all(float(v) < 1e-12 for v in equal.values())  # 0 up to the folded BatchNorms' rounding
    other = copy.deepcopy(student)
    with torch.no_grad():
        for name, p in other.named_parameters():
            if not name.startswith("backbone."):  # LD shares the backbone: differ in neck and head
                p.add_(0.05 * torch.randn_like(p))
    different = distill_terms(setup, method, student, other)
    assert all(float(v) > 0.0 for v in different.values()), different


def test_erd_is_a_part_any_method_takes_and_distils_against_the_teacher(setup):
    from nanodet.continual.methods.erd import ElasticResponseDistillation

    method = build_method("naive", erd=True)
    assert isinstance(method.part(ElasticResponseDistillation), ElasticResponseDistillation)
    assert method.describe() == {"method": "naive", "erd": True}
    torch.manual_seed(0)
    student = build_model(setup[0].model)
    equal = distill_terms(setup, "naive", student, student, erd=True)
    assert set(equal) == {"loss_erd_cls", "loss_erd_reg"} and all(float(v) == 0.0 for v in equal.values())
    other = copy.deepcopy(student)
    with torch.no_grad():
        for p in other.head.parameters():
            p.add_(0.05 * torch.randn_like(p))
        other.head.gfl_cls[-1].bias[1] = 4.0  # a confident old-class (ring) response on the coarsest level
    different = distill_terms(setup, "naive", student, other, erd=True)
    assert all(float(v) > 0.0 for v in different.values()), different
    assert distill_terms(setup, "naive", student, other, t=0, erd=True) == {}  # task 0: no old classes


def test_sid_distils_old_and_future_logits_never_the_current_tasks(setup):
    method = build_method("sid")
    context = context_for(setup, 1)  # disc, ring, square | triangle, diamond | cross: current = 4, 5
    assert context.new_classes == [4, 5]
    distilled = method.part(LogitDistillation).distilled_classes(context)
    assert distilled == [0, 1, 2] + [3] + list(range(6, 20))  # old + future
    preds = torch.zeros(1, 10, 20 + 32)
    current = preds.clone()
    current[..., [4, 5]] = 5.0  # differ only in the current task's logits
    assert float(logit_distillation(current, preds, distilled)) == 0.0
    old = preds.clone()
    old[..., 1] = 5.0
    assert float(logit_distillation(old, preds, distilled)) > 0.0
    towers = [torch.ones(1, 4, 2, 2)]
    assert float(feature_distillation(towers, [t + 1 for t in towers])) == pytest.approx(1.0)


# --------------------------------------------------------------- replay
def test_replay_policies_fill_the_buffer_as_specified():
    rng = np.random.default_rng(0)

    def items(task, n, label):
        from nanodet.data.dataset import ImageRecord
        return [BufferItem(ImageRecord(task * 1000 + i, f"{task}_{i}.jpg", 10, 10, [[0, 0, 5, 5]], [label], [False]),
                           task) for i in range(n)]

    first = select_random(rng, [], items(0, 400, 0), 250)
    assert len(first) == 250 and all(i.task == 0 for i in first)
    second = select_random(rng, first, items(1, 300, 1), 250)
    assert sum(i.task == 1 for i in second) == 125 and sum(i.task == 0 for i in second) == 125
    small_task = select_random(rng, second, items(2, 40, 2), 250)
    assert sum(i.task == 2 for i in small_task) == 40 and len(small_task) == 250
    balanced = select_balanced(rng, items(0, 300, 0) + items(1, 300, 1), items(2, 300, 2), 90)
    assert [sum(int(i.record.labels[0]) == c for i in balanced) for c in range(3)] == [30, 30, 30]


def test_the_balanced_buffer_gives_every_class_an_equal_share_on_a_skewed_stream():
    """A 15p1-like stream: a base task whose images hold 1 to 4 of 15 classes, one of them in
    most images (as people in VOC), then five one-class tasks of 60 images."""
    from nanodet.data.dataset import ImageRecord

    rng = np.random.default_rng(3)
    frequency = np.r_[8.0, np.linspace(3, 0.5, 14)]
    base = []
    for i in range(2000):
        labels = sorted(set(rng.choice(15, size=rng.integers(1, 5), p=frequency / frequency.sum()).tolist()))
        base.append(BufferItem(ImageRecord(i, f"{i}.jpg", 10, 10, [[0, 0, 5, 5]] * len(labels), labels,
                                           [False] * len(labels)), 0))
    buffer = select_balanced(rng, [], base, 250)
    for task, label in enumerate(range(15, 20), start=1):
        new = [BufferItem(ImageRecord(task * 10000 + i, f"{task}_{i}.jpg", 10, 10, [[0, 0, 5, 5]], [label], [False]),
                          task) for i in range(60)]
        buffer = select_balanced(rng, buffer, new, 250)
        assert len(buffer) == 250 and len({id(item) for item in buffer}) == 250
    images_per_class = np.array([sum(c in item.record.labels for item in buffer) for c in range(20)])
    assert images_per_class.min() >= 12  # 250 images, 20 classes
    assert images_per_class.max() - images_per_class.min() <= 2, images_per_class  # was 12 against 69


def test_the_ocdm_buffer_is_closer_to_uniform_than_random_on_a_skewed_stream():
    from nanodet.data.dataset import ImageRecord

    def item(key, labels, task):
        return BufferItem(ImageRecord(key, f"{key}.jpg", 10, 10, [[0, 0, 5, 5]] * len(labels), labels,
                                      [False] * len(labels)), task)

    # By hand: three images of class 0 and one of class 1; two kept are one of each.
    small = [item(0, [0], 0), item(1, [0], 0), item(2, [0], 0), item(3, [1], 0)]
    kept = select_ocdm(np.random.default_rng(0), [], small, 2)
    assert sorted(int(i.record.labels[0]) for i in kept) == [0, 1]
    # Boxes, not images: an image of three class-0 boxes weighs three.
    kept = select_ocdm(np.random.default_rng(0), [], [item(4, [0, 0, 0], 0), item(5, [0], 0), item(6, [1], 0)], 2)
    assert sorted(i.record.id for i in kept) == [5, 6]

    def l2_to_uniform(policy):
        rng = np.random.default_rng(3)
        frequency = np.r_[8.0, np.linspace(3, 0.5, 14)]
        base = [item(i, rng.choice(15, size=rng.integers(1, 5), p=frequency / frequency.sum()).tolist(), 0)
                for i in range(1500)]
        buffer = policy(rng, [], base, 250)
        for task, label in enumerate(range(15, 20), start=1):
            buffer = policy(rng, buffer, [item(task * 10000 + i, [label], task) for i in range(60)], 250)
            assert len(buffer) == 250 and len({id(b) for b in buffer}) == 250
        counts = np.bincount([c for b in buffer for c in b.record.labels], minlength=20)
        return float(((counts / counts.sum() - 1 / 20) ** 2).sum())

    assert l2_to_uniform(select_ocdm) < l2_to_uniform(select_random) / 20


def test_label_propagation_labels_newer_classes_on_buffer_images_never_over_a_box(setup, monkeypatch):
    from nanodet.continual.methods import buffer as buffer_module
    from nanodet.evaluator.detections import Detections

    method = build_method("replay", buffer_size=4, label_propagation=0.5)
    replay = method.part(ImageReplay)
    method.on_task_end(context_for(setup, 0), None)  # task 0: nothing earlier to label
    replay.buffer = replay.buffer[:2]  # two task-0 images, both kept at the next refill (half of 4)
    first, second = replay.buffer[0].record, replay.buffer[1].record
    existing = first.boxes[0]
    asked = []

    def fake_predictions(model, dataset, cfg, device):
        asked.append(sorted(r.id for r in dataset.records))
        rows = [
            (first.id, 4, [0, 0, 10, 10], 0.9),                    # task 1's triangle, free: added
            (first.id, 5, list(existing + [1, 1, 1, 1]), 0.95),    # over a box it has: not added
            (first.id, 4, [50, 50, 60, 60], 0.3),                  # under the threshold: not added
            (first.id, 0, [70, 70, 90, 90], 0.99),                 # an old class: not added
            (second.id, 5, [20, 20, 40, 40], 0.6),                 # task 1's diamond: added
        ]
        return Detections(np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64),
                          np.array([r[2] for r in rows], np.float32), np.array([r[3] for r in rows], np.float32))

    monkeypatch.setattr(buffer_module, "predict_detections", fake_predictions)
    method.on_task_end(context_for(setup, 1), torch.nn.Linear(1, 1))  # new classes: triangle 4, diamond 5
    assert asked == [sorted([first.id, second.id])]  # only the earlier images are labelled
    by_id = {item.record.id: item for item in replay.buffer}
    got = by_id[first.id].record
    assert list(got.labels) == list(first.labels) + [4] and not got.difficult[-1]
    np.testing.assert_array_equal(got.boxes[:-1], first.boxes)
    np.testing.assert_array_equal(got.boxes[-1], [0, 0, 10, 10])
    assert list(by_id[second.id].record.labels) == list(second.labels) + [5]
    assert by_id[first.id].task == 0  # still task 0's image
    assert all(len(item.record.labels) == len(set(map(tuple, item.record.boxes.tolist()))) for item in replay.buffer)
    with pytest.raises(ValueError, match="--label-propagation labels a replay buffer: give --buffer-size"):
        build_method("naive", label_propagation=0.5)
    with pytest.raises(ValueError, match="--label-propagation labels an image buffer"):
        build_method("latent_replay", buffer_size=4, label_propagation=0.5)


def test_replay_batches_are_half_buffer_with_the_buffers_own_boxes(setup):
    cfg, scenario, data = setup
    method = build_method("replay", buffer_size=6)
    method.on_task_end(context_for(setup, 0), None)
    assert len(method.part(ImageReplay).buffer) == 6 and method.buffer_bytes() >= 6 * 128 * 128 * 3
    context = context_for(setup, 1)
    loader = method.train_dataloader(context, cfg, torch.device("cpu"))
    assert isinstance(loader.batch_sampler.batch_sampler, ReplayBatchSampler)  # inside SeededBatches
    task1 = set(context.new_classes)
    for batch in loader:
        labels = [set(np.asarray(image).tolist()) for image in batch["gt_labels"]]
        assert len(labels) == 8
        assert all(seen and seen <= task1 for seen in labels[:4])  # current task: only its boxes
        assert all(seen and seen <= {0, 1, 2} for seen in labels[4:])  # buffer: only task 0's boxes
    sampler = ReplayBatchSampler(10, 3, 8, seed=0)
    batches = list(sampler)
    current = [i for b in batches for i in b[:4]]
    assert len(batches) == 2 and len(set(current)) == 8 and all(0 <= i < 10 for i in current)
    assert all(10 <= i < 13 for b in batches for i in b[4:])


def test_replay_buffer_survives_a_restart(setup, tmp_path):
    method = build_method("replay", buffer_size=5)
    method.on_task_end(context_for(setup, 0), None)
    method.save_state(tmp_path)
    other = build_method("replay", buffer_size=5)
    other.load_state(tmp_path)
    stored, loaded = method.part(ImageReplay).buffer, other.part(ImageReplay).buffer
    assert [(i.task, i.record.file_name) for i in loaded] == [(i.task, i.record.file_name) for i in stored]
    assert all(np.array_equal(a.record.boxes, b.record.boxes) for a, b in zip(loaded, stored))


# --------------------------------------------------------------- every method runs
@pytest.mark.parametrize("method, settings", [
    ("replay", {"buffer_size": 6}),
    ("latent_replay", {"buffer_size": 6, "latent_dtype": "int8"}),
    ("lwf", {}),
    ("sid", {}),
    ("ld", {"pseudo_labels": 0.3, "drop_background": True}),
])
def test_every_method_completes_a_short_run(data_dir, tmp_path, method, settings):
    results = tiny_runner(data_dir, tmp_path / "run", method=method, **settings).run()
    assert results["finished"] and len(results["per_task"]) == 2
    second = results["per_task"][1]
    assert second["trainable_parameters"] > 0 and second["parameters_in_memory"] >= second["trainable_parameters"]
    if "replay" in method:
        assert results["buffer_bytes"] > 0
        assert (tmp_path / "run" / "task_1" / "buffer.json").is_file()
    if method == "latent_replay":
        maps = 116 * 16 * 16 + 232 * 8 * 8 + 464 * 4 * 4  # int8 bytes of one 128x128 image's maps
        assert results["buffer_bytes"] >= 6 * maps
    if method in ("lwf", "sid"):
        assert second["parameters_in_memory"] == 2 * second["trainable_parameters"]
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["method"]["method"] == method


def test_flops_tool_reports_what_each_method_trains_and_holds(setup):
    from fixtures_tools import load_tool

    tool = load_tool("flops")
    rows = {name: (trainable, memory) for name, trainable, memory in tool.method_footprints(setup[0])}
    student = sum(p.numel() for p in build_model(setup[0].model).parameters())
    neck_head = rows["ld"][0]
    assert rows["naive"] == (student, student) and rows["sid"] == (student, 2 * student)
    assert 0 < neck_head < student / 2 and rows["ld"][1] == student + neck_head
    assert rows["latent_replay"] == (neck_head, student)


@pytest.mark.parametrize("name", ["lwf", "ld"])
def test_the_teacher_takes_the_students_memory_format(setup, name):
    # A channels_last student feeding an NCHW teacher paid a layout conversion per layer.
    cfg, _, _ = setup
    model = build_model(cfg.model)
    method = build_method(name)
    method.on_task_start(context_for(setup, 1), model)
    def layouts_are_channels_last():
        # Strides decide the layout cuDNN sees, even for kernels whose size-1 dims make both
        # layouts "contiguous" (depthwise and 1x1 convolutions).
        kernels = [p for p in method.teacher.model.parameters() if p.dim() == 4]
        return [p.stride() == p.to(memory_format=torch.channels_last).stride() for p in kernels]

    assert not all(layouts_are_channels_last())
    method.to("cpu", torch.channels_last)
    assert all(layouts_are_channels_last())
