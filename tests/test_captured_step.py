"""device.cuda_graph: the whole training step as one static step (a CUDA graph on a GPU).

CUDA graphs need a GPU, so these tests run the same static steps eagerly on the CPU
(``device.cuda_graph: always``) and check them against Lightning's automatic optimization:
same batches, warm-up, schedule, clipping and step count must give the same weights.
"""

import pytest
import torch

import fixtures_continual  # noqa: I001 - tests/ is on sys.path (conftest)
from fixtures_continual import TWO_TASKS, Interrupt, tiny_cfg
from nanodet.continual import ContinualRunner, build_method, parse_scenario
from nanodet.model.head import NanoDetPlusHead
from nanodet.trainer import captured_step
from nanodet.trainer.captured_step import GT_ROWS_MULTIPLE, CapturedTrainingStep, StaticBatch, batch_key
from nanodet.util import ConfigError, read_config


def run_two_tasks(data_dir, run_dir, method, cuda_graph, epochs=2, callbacks=(), **settings):
    cfg = tiny_cfg(data_dir, epochs=epochs, extra=["device.gpu_augment=always", f"device.cuda_graph={cuda_graph}",
                                                    "schedule.warmup.steps=4"])
    runner = ContinualRunner(cfg, parse_scenario(TWO_TASKS, cfg.class_names), build_method(method, **settings),
                             run_dir=run_dir, seed=7, progress_bar=False, callbacks=callbacks)
    results = runner.run()
    return results, torch.load(run_dir / "task_1" / "model.pth", weights_only=True)


@pytest.fixture
def count_static_steps(monkeypatch):
    calls = []
    original = CapturedTrainingStep.__call__

    def counted(self, batch):
        calls.append(batch["img"].shape[0])
        return original(self, batch)

    monkeypatch.setattr(CapturedTrainingStep, "__call__", counted)
    return calls


@pytest.mark.parametrize("method, settings", [("sid", {}), ("ld", {}), ("ld", {"pseudo_labels": 0.01})])
def test_static_steps_train_exactly_as_lightnings_automatic_optimization(tmp_path, method, settings,
                                                                         count_static_steps, monkeypatch):
    """Warm-up learning rates, the per-epoch schedule, gradient clipping, the teacher's terms,
    pseudo-labels and Lightning's step count: the static path (manual optimization) reproduces
    the automatic one."""
    from nanodet.continual.methods import pseudo_labels

    added = []

    def counted(head, batch, *args, **kwargs):
        out = original(head, batch, *args, **kwargs)
        added[-1] += int(out["gt_valid"].sum()) - int(pseudo_labels.pad_gt_batch(batch, "cpu").valid.sum())
        return out

    original = pseudo_labels.add_pseudo_labels
    monkeypatch.setattr(pseudo_labels, "add_pseudo_labels", counted)
    if settings:  # a teacher of two tiny epochs still scores about the prior, 0.01 (the head's
        # bias): with the head's own floor off, a threshold of 0.01 makes pseudo-labels of its best priors
        monkeypatch.setattr(NanoDetPlusHead, "score_thr", 0.0)
    added.append(0)
    automatic, automatic_weights = run_two_tasks(tmp_path / "data", tmp_path / "auto", method, "false", **settings)
    assert not count_static_steps
    added.append(0)
    static, static_weights = run_two_tasks(tmp_path / "data", tmp_path / "static", method, "always", **settings)
    steps_per_task = [entry["epochs"] for entry in static["per_task"]]
    assert count_static_steps and steps_per_task == [entry["epochs"] for entry in automatic["per_task"]]
    assert static_weights.keys() == automatic_weights.keys()
    assert added == ([added[0]] * 2 if settings else [0, 0]) and (added[0] > 0) == bool(settings)  # in both runs
    for name, value in static_weights.items():
        torch.testing.assert_close(value, automatic_weights[name], msg=name)


def test_a_static_run_resumed_within_its_warm_up_trains_as_one_uninterrupted(tmp_path, count_static_steps):
    """The checkpoint of an interrupted task holds the schedule's learning rate, not the warm-up's
    scaled one, so the resumed fit continues the warm-up and the schedule where they were."""
    _, uninterrupted = run_two_tasks(tmp_path / "data", tmp_path / "whole", "ld", "always", epochs=3)
    with pytest.raises((KeyboardInterrupt, SystemExit)):  # task 0 has 2 steps an epoch: inside the warm-up
        run_two_tasks(tmp_path / "data", tmp_path / "cut", "ld", "always", epochs=3, callbacks=[Interrupt(0, 1)])
    assert (tmp_path / "cut" / "task_0" / "model_last.ckpt").is_file()
    _, resumed = run_two_tasks(tmp_path / "data", tmp_path / "cut", "ld", "always", epochs=3)
    for name, value in resumed.items():
        torch.testing.assert_close(value, uninterrupted[name], msg=name)


def test_methods_that_choose_on_the_host_per_step_train_eagerly():
    assert build_method("sid").step_capturable() and build_method("ld").step_capturable()
    assert build_method("ld", pseudo_labels=0.5).step_capturable()
    assert not build_method("latent_replay").step_capturable()


def padded_batch(boxes_per_image, batch_size=2, size=32):
    rows = max(boxes_per_image)
    valid = torch.arange(rows)[None, :] < torch.tensor(boxes_per_image)[:, None]
    return {"img": torch.randn(batch_size, 3, size, size),
            "gt_bboxes_padded": torch.rand(batch_size, rows, 4) * 10 + 1,
            "gt_labels_padded": torch.randint(3, (batch_size, rows)),
            "gt_valid": valid}


def test_one_static_batch_serves_batches_of_fewer_boxes_and_clears_their_old_rows():
    many, few = padded_batch([5, 3]), padded_batch([1, 0])
    key = batch_key(many, (32, 32))
    assert key == batch_key(few, (32, 32)) == (2, GT_ROWS_MULTIPLE, 0)
    static = StaticBatch(many, (32, 32), key[1], key[2])
    static.load(many)
    tensors = static.load(few)
    assert tensors["gt_valid"].sum(1).tolist() == [1, 0]  # no stale row of the earlier batch is valid
    torch.testing.assert_close(tensors["gt_bboxes_padded"][0, 0], few["gt_bboxes_padded"][0, 0])
    assert not tensors["gt_bboxes_padded"][0, 1:].any()
    torch.testing.assert_close(tensors["img"], few["img"])


def test_a_smaller_image_sits_on_a_zero_canvas_of_the_input_size():
    batch = padded_batch([2, 2], size=32)
    batch["img"] = batch["img"][..., :24, :16]
    static = StaticBatch(batch, (32, 32), GT_ROWS_MULTIPLE, 0)
    img = static.load(batch)["img"]
    assert img.shape[-2:] == (32, 32)
    torch.testing.assert_close(img[..., :24, :16], batch["img"])
    assert not img[..., 24:, :].any() and not img[..., :, 16:].any()


def test_more_boxes_than_before_get_a_graph_key_of_their_own():
    assert batch_key(padded_batch([GT_ROWS_MULTIPLE + 1, 1]), (32, 32))[1] == 2 * GT_ROWS_MULTIPLE


def test_a_batch_larger_than_the_input_size_is_refused():
    with pytest.raises(ValueError, match="larger than the input size"):
        batch_key(padded_batch([1, 1], size=64), (32, 32))


def test_a_cpu_pipeline_batch_gets_its_ground_truth_padded():
    batch = {"img": torch.zeros(2, 3, 8, 8), "gt_bboxes": [torch.tensor([[0., 0., 4., 4.]]), torch.zeros(0, 4)],
             "gt_labels": [torch.tensor([2]), torch.zeros(0, dtype=torch.long)]}
    padded = captured_step.with_padded_gt(batch)
    assert padded["gt_valid"].tolist() == [[True], [False]] and padded["gt_labels_padded"][0, 0] == 2


@pytest.mark.parametrize("value", ["sometimes", 2])
def test_config_refuses_other_cuda_graph_values_naming_key_and_value(value):
    with pytest.raises(ConfigError, match=f"device.cuda_graph must be true, false or always, got {value!r}"):
        read_config(fixtures_continual.ROOT / "cfg/demo.yml", [f"device.cuda_graph={value}"])


def test_a_captured_optimizer_is_capturable_and_fused_where_torch_offers_both():
    assert captured_step.capturable_optimizer_options(torch.optim.AdamW) == {"capturable": True, "fused": True}
    assert captured_step.capturable_optimizer_options(torch.optim.Adam) == {"capturable": True, "fused": True}
    assert captured_step.capturable_optimizer_options(torch.optim.SGD) == {}  # nothing to make capturable
    # The options build an optimizer that steps (fused AdamW runs on the CPU too).
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=0.1, **captured_step.capturable_optimizer_options(torch.optim.AdamW))
    weight.sum().backward()
    optimizer.step()
    assert torch.all(weight < 1)


def test_a_compiled_block_compiles_once_whatever_autocast_cache_state_the_caller_steps_under():
    # Warm-up steps ran under the caller's autocast state and the capture under its own (cache off):
    # the cache flag is in torch.compile's guards, so every compiled block was compiled again during
    # capture, where a dynamic-shape kernel's first-launch autotuning breaks it (H200, 2026-12-04).
    torch._dynamo.reset()
    compiles = []

    def counting_backend(graph_module, example_inputs):
        compiles.append(graph_module)
        return graph_module.forward

    layer = torch.nn.Linear(4, 2)
    compiled = torch.compile(layer, backend=counting_backend)
    seen_cache_states = []

    def compute_loss(static):
        seen_cache_states.append(torch.is_autocast_cache_enabled())
        loss = compiled(static["img"].flatten(1)[:, :4]).square().mean()
        return loss, {"loss": loss}

    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    step = CapturedTrainingStep(compute_loss, optimizer, layer.parameters(), clip_norm=None, canvas=(2, 2),
                                use_graphs=False)
    batch = {"img": torch.rand(2, 3, 2, 2), "gt_bboxes_padded": torch.zeros(2, 1, 4),
             "gt_labels_padded": torch.zeros(2, 1, dtype=torch.long), "gt_valid": torch.zeros(2, 1, dtype=torch.bool)}
    before = layer.weight.detach().clone()
    assert torch.is_autocast_cache_enabled()  # torch's default: the state of a caller without autocast
    step(batch)
    with torch.autocast("cpu", enabled=False, cache_enabled=False):  # Lightning's mixed precision's state
        step(batch)
    assert seen_cache_states == [False, False]
    assert len(compiles) == 1
    assert not torch.equal(layer.weight, before)  # and the steps trained
    torch._dynamo.reset()
