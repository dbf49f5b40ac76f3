"""Training end to end on the CPU: tools/train.py, checkpoints, resume, tools/test.py, tools/inference.py."""

import math
from pathlib import Path

import pytest
import torch

from nanodet.model.arch import build_model
from nanodet.trainer.builders import limit_host_threads, resolve_devices, resolve_precision
from nanodet.trainer.task import warmup_factor
from nanodet.util import CfgNode, CheckpointError, load_model_weight, read_checkpoint, read_config
from fixtures_lightning import TinyModule, bare_trainer
from fixtures_tools import as_args, load_tool, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("train")
    # val_intervals above total_epochs: it used to validate never, and so write no model_best.ckpt.
    overrides = [*tiny_overrides(tmp_path), "schedule.val_intervals=5"]
    load_tool("train").main(["cfg/demo.yml", "--seed", "0", *as_args(overrides)])
    return tmp_path, overrides


def test_training_writes_checkpoints_logs_and_config(trained):
    tmp_path, _ = trained
    work = tmp_path / "work"
    for name in ("model_last.ckpt", "model_best.ckpt", "model_best/nanodet_model_best.pth",
                 "model_best/eval_results.json", "train.log", "train_cfg.yml"):
        assert (work / name).is_file(), name
    assert list((work / "tensorboard").glob("events.out.tfevents.*"))
    log = (work / "train.log").read_text()
    assert "Train|Epoch1/2" in log and "Val|Epoch2" in log and "Val|Epoch1" not in log
    assert "validating after the last epoch instead" in log
    # The end of the run says where its files are and how to evaluate the best one.
    assert f"finished: {work} holds model_best.ckpt (val mAP " in log
    assert f"python tools/test.py cfg/demo.yml --model {work / 'model_best.ckpt'}" in log
    checkpoint = read_checkpoint(work / "model_last.ckpt")
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 6  # 24 images, batch 8, 2 epochs
    assert all(k.startswith("model.") for k in checkpoint["state_dict"])  # upstream's layout


def test_checkpoints_load_back_and_reproduce_the_validation_metric(trained):
    tmp_path, overrides = trained
    best = read_checkpoint(tmp_path / "work" / "model_best.ckpt")
    logged = best["callbacks"]
    test_tool = load_tool("test")
    from_ckpt = test_tool.main(["cfg/demo.yml", "--model", str(tmp_path / "work" / "model_best.ckpt"),
                                "--device", "cpu", *as_args(overrides)])
    from_pth = test_tool.main(["cfg/demo.yml", "--model", str(tmp_path / "work/model_best/nanodet_model_best.pth"),
                               "--device", "cpu", *as_args(overrides)])
    assert from_ckpt["mAP"] == from_pth["mAP"]
    best_score = [v["best_model_score"] for k, v in logged.items() if "model_best" in str(v.get("best_model_path", ""))]
    assert best_score and math.isclose(float(best_score[0]), from_ckpt["mAP"], rel_tol=1e-6, abs_tol=1e-9)


def test_resume_continues_from_the_last_epoch(trained, tmp_path):
    source, overrides = trained
    import shutil

    shutil.copytree(source / "work", tmp_path / "work")
    overrides = [o for o in overrides if not o.startswith(("save_dir", "schedule.total_epochs"))]
    overrides += [f"save_dir={tmp_path / 'work'}", "schedule.total_epochs=3"]
    load_tool("train").main(["cfg/demo.yml", "--resume", *as_args(overrides)])
    checkpoint = read_checkpoint(tmp_path / "work" / "model_last.ckpt")
    assert checkpoint["epoch"] == 2 and checkpoint["global_step"] == 9  # one more epoch, not three


def test_inference_tool_saves_annotated_images(trained, tmp_path):
    source, overrides = trained
    out = load_tool("inference").main([
        "cfg/demo.yml", "--model", str(source / "work" / "model_last.ckpt"), "--device", "cpu",
        "--path", str(source / "data" / "JPEGImages"), "--save-dir", str(tmp_path / "vis"), "--score", "0.0",
        *as_args(overrides),
    ])
    drawn = sorted(Path(out).glob("*.jpg"))
    assert len(drawn) == 32
    import cv2

    assert cv2.imread(str(drawn[0])).shape[:2] == (512, 512)  # 128 px enlarged four times, for legible labels


def test_labels_of_neighbouring_boxes_do_not_cover_each_other():
    import numpy as np

    inference = load_tool("inference")
    # Two boxes a few pixels apart, each narrower than its label: side by side, the labels would overlap.
    first = inference.place_label((60, 120, 120, 180), (75, 12), (480, 480), [])
    second = inference.place_label((132, 120, 192, 180), (75, 12), (480, 480), [first])
    assert first[3] <= 120 and not inference._boxes_overlap(first, second)  # first above its box
    assert inference.place_label((0, 0, 50, 50), (75, 12), (480, 480), [])[1] == 0  # at the top edge: inside
    img = np.zeros((160, 160, 3), np.uint8)
    detections = [(0, 0.9, [20.0, 40.0, 40.0, 60.0]), (1, 0.8, [44.0, 40.0, 64.0, 60.0])]
    assert inference.draw_detections(img, detections, ["disc", "ring"], 0.5).shape[:2] == (480, 480)
    assert (inference.draw_detections(img, detections, ["disc", "ring"], 0.95) == 0).all()  # nothing above 0.95


def test_unloadable_files_get_clear_errors(tmp_path):
    cfg = read_config(ROOT / "cfg/demo.yml")
    model = build_model(cfg.model)
    with pytest.raises(CheckpointError, match="not found"):
        load_model_weight(model, tmp_path / "missing.ckpt")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="text.ckpt: not a readable"):
        load_model_weight(model, tmp_path / "text.ckpt")
    other = read_config(ROOT / "cfg/demo.yml", ["model.arch.head.num_classes=3", "class_names=[a, b, c]"])
    torch.save({"state_dict": build_model(other.model).state_dict()}, tmp_path / "three.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatch.*gfl_cls"):
        load_model_weight(model, tmp_path / "three.pth")
    with pytest.raises(SystemExit, match="does not fit"):
        load_tool("test").main(["cfg/demo.yml", "--model", str(tmp_path / "three.pth")])


def test_plain_upstream_style_checkpoints_load(tmp_path):
    cfg = read_config(ROOT / "cfg/demo.yml")
    source, target = build_model(cfg.model), build_model(cfg.model)
    state = source.state_dict()
    # upstream's Lightning layout with an EMA copy: the average wins
    averaged = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    checkpoint = {"state_dict": {**{f"model.{k}": v for k, v in state.items()},
                                 **{f"avg_model.{k}": v for k, v in averaged.items()}}}
    load_model_weight(target, checkpoint)
    key = "head.gfl_cls.0.weight"
    assert torch.equal(target.state_dict()[key], averaged[key])
    load_model_weight(target, {f"module.{k}": v for k, v in state.items()})  # DataParallel prefix
    assert torch.equal(target.state_dict()[key], state[key])


def test_linear_warmup_follows_upstreams_formula():
    warmup = CfgNode({"name": "linear", "steps": 10, "ratio": 0.01})
    assert warmup_factor(0, warmup, 10) == pytest.approx(0.01)
    assert warmup_factor(5, warmup, 10) == pytest.approx(1 - 0.5 * 0.99)
    assert warmup_factor(10, warmup, 10) == 1.0 and warmup_factor(3, warmup, 0) == 1.0
    assert warmup_factor(0, CfgNode({"name": "exp", "steps": 10, "ratio": 0.01}), 10) == pytest.approx(0.01)
    assert warmup_factor(5, CfgNode({"name": "constant", "steps": 10, "ratio": 0.1}), 10) == 0.1


def test_warmup_is_logged_and_capped_by_the_run_length(trained):
    tmp_path, _ = trained
    # warm-up of 4 steps within 6: the first logged learning rate is ratio * lr
    lines = [line for line in (tmp_path / "work" / "train.log").read_text().splitlines() if "Train|" in line]
    first_lr = float(lines[0].split("lr:")[1].split("|")[0])
    cfg = read_config(ROOT / "cfg/demo.yml")
    ratio = cfg.schedule.warmup.ratio
    assert first_lr == pytest.approx(cfg.schedule.optimizer.lr * ratio, rel=1e-2)


def test_gpu_request_without_cuda_falls_back_to_cpu(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_devices([0, 1]) == ("cpu", 1)
    assert resolve_devices(-1) == ("cpu", 1)
    assert resolve_devices([0], device="cpu") == ("cpu", 1)
    with pytest.raises(ValueError, match="--device"):
        resolve_devices([0], device="tpu")
    assert resolve_devices([0], device="cpu:2") == ("cpu", 2)  # two gloo processes
    for bad in ("cpu:0", "cpu:two"):
        with pytest.raises(ValueError, match=f"--device '{bad}'"):
            resolve_devices([0], device=bad)
    assert resolve_precision(16, "cpu") == "bf16-mixed"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision(8, "gpu")


def test_host_threads_limit_a_gpu_trainer_and_leave_a_cpu_trainer_every_core():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        limit_host_threads(1, "cpu")
        assert torch.get_num_threads() == 2
        limit_host_threads(0, "gpu")  # 0: PyTorch's own count
        assert torch.get_num_threads() == 2
        limit_host_threads(1, "gpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_loss_terms_reach_tensorboard_at_every_logging_step(tmp_path):
    # The module logs the loss terms only on the steps the logger writes (the rest would be
    # thrown away): with log.interval 2 and 6 steps, every second step must be in the file.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith("log.interval")] + ["log.interval=2"]
    load_tool("train").main(["cfg/demo.yml", "--seed", "0", *as_args(overrides)])
    events = EventAccumulator(str(next((tmp_path / "work" / "tensorboard").glob("events.out.tfevents.*"))))
    events.Reload()
    for term in ("train/loss_qfl", "train/loss_bbox", "train/loss_dfl", "train/lr"):
        scalars = events.Scalars(term)
        assert [s.step for s in scalars] == [1, 3, 5], term
        assert all(math.isfinite(s.value) for s in scalars)
    # The learning rate of the step it is written at (3 steps an epoch; the demo's lr and eta_min,
    # linear warm-up over 4 steps from ratio 0.01): step 1 in epoch 0 at warm-up factor
    # 1 - 0.75 * 0.99; step 3 in epoch 1, whose cosine lr (T_max 2) is halfway from lr to eta_min,
    # at 1 - 0.25 * 0.99; step 5 after the warm-up.
    schedule = read_config(ROOT / "cfg/demo.yml").schedule
    lr, eta_min = schedule.optimizer.lr, schedule.lr_schedule.eta_min
    assert schedule.warmup.ratio == 0.01
    epoch1 = eta_min + (lr - eta_min) / 2
    expected = [lr * (1 - 0.75 * 0.99), epoch1 * (1 - 0.25 * 0.99), epoch1]
    assert [s.value for s in events.Scalars("train/lr")] == pytest.approx(expected, rel=1e-5)


def test_last_checkpoint_waits_for_its_interval_and_always_follows_the_last_epoch(tmp_path, monkeypatch):
    # A fake clock: every training step takes 3 s. With a 10 s interval and 2 steps an epoch,
    # model_last.ckpt is written after epoch 1 (12 s) and after the last epoch (epoch 3, 24 s),
    # not after epochs 0 (6 s) and 2 (6 s after the last write).
    import pytorch_lightning as pl

    from nanodet.trainer import builders

    clock = [0.0]
    monkeypatch.setattr(builders.time, "monotonic", lambda: clock[0])

    def three_seconds(module):
        clock[0] += 3.0

    class SeenAtEpochStart(pl.Callback):
        steps = []

        def on_train_epoch_start(self, trainer, module):
            last = tmp_path / "model_last.ckpt"
            self.steps.append(read_checkpoint(last)["global_step"] if last.is_file() else None)

    cfg = read_config("cfg/demo.yml", ["device.gpu_ids=-1", "schedule.total_epochs=4",
                                       "schedule.checkpoint_interval=10"])
    seen = SeenAtEpochStart()
    trainer = builders.build_trainer(cfg, tmp_path, logger=False, enable_progress_bar=False, save_best=False,
                                     callbacks=[seen])
    trainer.fit(TinyModule(images=8, on_step=three_seconds))
    assert seen.steps == [None, None, 4, 4]
    assert read_checkpoint(tmp_path / "model_last.ckpt")["global_step"] == 8


def test_objects_alive_after_the_first_steps_are_frozen_until_the_fit_ends():
    # One full collection after step 2, then gc.freeze(): later steps see the frozen objects out
    # of the collector's sight, and automatic collection stays on; the fit's end, and a failure,
    # unfreeze them.
    import gc

    from nanodet.trainer.builders import FreezeLongLivedObjects

    seen = []  # per step: (frozen objects, automatic collection on, full collections so far)
    full_collections = [0]

    def count(phase, info):
        if phase == "stop" and info["generation"] == 2:
            full_collections[0] += 1

    def record(module):
        seen.append((gc.get_freeze_count(), gc.isenabled(), full_collections[0]))

    def fail(module):
        if module.global_step == 3:
            raise RuntimeError("a step failed")

    assert gc.get_freeze_count() == 0
    freeze = FreezeLongLivedObjects(after_steps=2)
    gc.callbacks.append(count)
    try:
        bare_trainer([freeze], max_epochs=1).fit(TinyModule(images=16, on_step=record))
    finally:
        gc.callbacks.remove(count)
    assert [frozen > 0 for frozen, _, _ in seen] == [False, False, True, True]
    assert all(enabled for _, enabled, _ in seen)
    assert seen[2][2] - seen[1][2] >= 1  # the collection before the freeze ran between steps 2 and 3
    assert freeze.frozen_objects >= seen[2][0] and freeze.collect_seconds > 0  # frozen objects may die
    assert gc.get_freeze_count() == 0  # unfrozen when the fit ended

    with pytest.raises(RuntimeError, match="a step failed"):
        bare_trainer([FreezeLongLivedObjects(after_steps=2)], max_epochs=1).fit(TinyModule(images=16, on_step=fail))
    assert gc.get_freeze_count() == 0
