"""The continual-learning core end to end on the CPU: task data, a 2-task run, its outputs, resume."""

import json

import numpy as np
import pytest
import pytorch_lightning as pl

from nanodet.continual import ContinualRunner, build_method, parse_scenario
from nanodet.continual.data import TaskData
from nanodet.continual.runner import RunError
from nanodet.util import CfgNode

import fixtures_continual  # noqa: I001 - tests/ is on sys.path (conftest)
from fixtures_continual import TWO_TASKS as SCENARIO, Interrupt, tiny_runner


def tiny_cfg(tmp_path, epochs=1):
    return fixtures_continual.tiny_cfg(tmp_path.parent / "tiny_synthetic", epochs)


def make_runner(tmp_path, epochs=1, callbacks=(), **kwargs):
    return tiny_runner(tmp_path.parent / "tiny_synthetic", tmp_path / "run", epochs=epochs, callbacks=callbacks,
                       **kwargs)


# ----------------------------------------------------------------------------- task data
def test_task_datasets_follow_the_missing_annotation_protocol(synthetic_data, eval_pipeline):
    node = {"name": "XMLDataset", "img_path": synthetic_data.img_dir, "ann_path": synthetic_data.voc_xml_dir,
            "input_size": [128, 128], "pipeline": eval_pipeline}
    cfg = CfgNode({"class_names": synthetic_data.class_names, "data": {"train": node, "val": node}})
    scenario = parse_scenario("[[red], [green, blue]]", synthetic_data.class_names)
    data = TaskData(cfg, scenario)
    gt = {g["file_name"]: g for g in synthetic_data.gt}

    task1 = data.train_dataset(1)
    expected = [g["file_name"] for g in synthetic_data.gt if np.isin(g["labels"], [1, 2]).any()]
    assert [r.file_name for r in task1.records] == expected  # which images, deterministic order
    for record in task1.records:
        keep = np.isin(gt[record.file_name]["labels"], [1, 2])
        assert np.array_equal(record.labels, gt[record.file_name]["labels"][keep])  # global labels
        assert np.allclose(record.boxes, gt[record.file_name]["boxes"][keep])  # only task boxes
    assert set(np.concatenate([r.labels for r in data.train_dataset(0).records])) == {0}
    # evaluation after task 1: every image with a seen-class box, all seen boxes
    assert len(data.eval_dataset(1)) == sum(np.isin(g["labels"], [0, 1, 2]).any() for g in synthetic_data.gt)
    assert data.full_train is data.full_train  # parsed once


# ----------------------------------------------------------------------------- a whole run
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("run")
    results = make_runner(tmp_path).run()
    return tmp_path, results


def test_a_two_task_run_writes_every_output(finished_run):
    tmp_path, results = finished_run
    run = tmp_path / "run"
    for name in ("run.json", "run.log", "results.json", "results.md", "map_per_task.png"):
        assert (run / name).is_file(), name
    for t in (0, 1):
        for name in ("model.pth", "eval.json", "done.json"):
            assert (run / f"task_{t}" / name).is_file(), (t, name)
        assert not (run / f"task_{t}" / "model_last.ckpt").exists()
    on_disk = json.loads((run / "results.json").read_text())
    assert on_disk["finished"] and on_disk["scenario"] == "custom" and on_disk["seed"] == 7
    assert on_disk["method"]["method"] == "naive" and len(on_disk["classes"]) == 20
    first, second = on_disk["per_task"]
    assert first["new_classes"][0] == "disc" and second["old_classes"] == first["new_classes"]
    assert second["seen_classes"] == on_disk["classes"]
    for key in ("train_images", "eval_images", "train_seconds", "mAP", "AP50", "voc_mAP50", "per_class_AP",
                "new_mAP", "trainable_parameters", "parameters_in_memory"):
        assert key in second, key
    assert set(second["per_class_AP"]) == set(on_disk["classes"])
    assert first["train_images"] < 24 and first["eval_images"] <= 12
    assert on_disk["task_matrix"][0][1] is None and len(on_disk["task_matrix"][1]) == 2
    assert "0" in second["forgetting"] and on_disk["parameters"]["trainable"] > 1_000_000
    assert "| 1 |" in (run / "results.md").read_text()


def test_the_per_task_plot_starts_at_zero_and_says_what_the_run_is(finished_run, tmp_path, monkeypatch):
    from nanodet.continual import report

    figures = []
    monkeypatch.setattr(report, "_save_figure", lambda fig, path: figures.append(fig))
    report.write_reports(tmp_path, finished_run[1])
    (axes,) = figures[0].axes
    assert axes.get_ylim()[0] == 0  # a drop looks as large as it is, not as large as the spread
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert legend == ["naive: seed 7, 1 epoch per task, batch 8"]


def test_the_console_shows_each_summary_once_and_run_log_keeps_every_table(tmp_path):
    import io
    import logging

    from nanodet.util import get_logger

    console = next(h for h in get_logger().handlers if type(h) is logging.StreamHandler)
    shown = io.StringIO()
    # The stream itself, not setStream: the handler may hold an earlier test's captured stream,
    # closed by now, which setStream would flush.
    previous, console.stream = console.stream, shown
    try:
        make_runner(tmp_path).run()
        logging.getLogger("nanodet.evaluator.coco_detection").info("a table after the run")
    finally:
        console.stream = previous
    shown, saved = shown.getvalue(), (tmp_path / "run" / "run.log").read_text()
    summary = "task 1/1 [pentagon+crescent+"
    assert shown.count(summary) == 1 and saved.count(summary) == 1
    assert f"finished: {tmp_path / 'run'} holds results.md" in shown
    for detail in ("VOC mAP@0.5:", "class    |", "GPU available"):  # tables and Lightning's notices
        assert detail not in shown and detail in saved, detail
    assert "a table after the run" in shown  # outside a run (tools/test.py) the tables are the output


def test_each_task_reports_where_its_time_went(finished_run):
    _, results = finished_run
    for entry in results["per_task"]:
        assert 0 <= entry["startup_seconds"] and 0 <= entry["eval_seconds"]
        if "base_model" not in entry:  # a trained task: its loader's share of the start-up
            assert 0 <= entry["startup_data_seconds"] <= entry["startup_seconds"]
        # the first steps are part of training, timed on their own (cuDNN's search, the graph's capture)
        assert entry["warmup_seconds"] is None or 0 < entry["warmup_seconds"] <= entry["train_seconds"]


def test_rerunning_a_finished_run_trains_nothing(finished_run):
    tmp_path, results = finished_run
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").glob("task_*/model.pth")}
    again = make_runner(tmp_path).run()
    assert again["per_task"] == results["per_task"]
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "run").glob("task_*/model.pth")}


def test_other_settings_in_the_same_directory_are_refused(finished_run):
    tmp_path, _ = finished_run
    with pytest.raises(RunError, match="differ in: seed"):
        cfg = tiny_cfg(tmp_path)
        ContinualRunner(cfg, parse_scenario(SCENARIO, cfg.class_names), build_method("naive"),
                        run_dir=tmp_path / "run", seed=8, progress_bar=False).run()


def test_resume_between_tasks(tmp_path):
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        make_runner(tmp_path, callbacks=[Interrupt(task=1, epoch=0)]).run()
    run = tmp_path / "run"
    assert (run / "task_0" / "done.json").is_file() and not (run / "task_1" / "done.json").exists()
    stamp = (run / "task_0" / "model.pth").stat().st_mtime_ns
    results = make_runner(tmp_path).run()
    assert results["finished"] and (run / "task_0" / "model.pth").stat().st_mtime_ns == stamp


def test_resume_within_a_task_continues_from_its_last_epoch(tmp_path):
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        make_runner(tmp_path, epochs=2, callbacks=[Interrupt(task=0, epoch=1)]).run()
    checkpoint = tmp_path / "run" / "task_0" / "model_last.ckpt"
    assert checkpoint.is_file()

    class CountEpochs(pl.Callback):
        epochs = []

        def on_train_epoch_start(self, trainer, module):
            self.epochs.append((module.context.index, trainer.current_epoch))

    counter = CountEpochs()
    results = make_runner(tmp_path, epochs=2, callbacks=[counter]).run()
    assert counter.epochs == [(0, 1), (1, 0), (1, 1)]  # task 0 only re-ran its second epoch
    assert results["finished"] and results["per_task"][0]["epochs"] == 2
    assert "resuming from its last epoch" in (tmp_path / "run" / "run.log").read_text()


def test_compare_tool_writes_a_table_and_the_two_plots(finished_run, tmp_path):
    import shutil

    from fixtures_tools import load_tool

    source, _ = finished_run
    other = tmp_path / "joint"
    shutil.copytree(source / "run", other)
    results = json.loads((other / "results.json").read_text())
    results["scenario"] = "joint"
    (other / "results.json").write_text(json.dumps(results))
    tool = load_tool("compare")
    table = tool.main([str(source / "run"), str(other), "--out", str(tmp_path / "cmp")])
    assert [row[0] for row in table["rows"]] == ["naive", "joint"]
    for name in ("comparison.md", "comparison.csv", "map_per_task.png", "map_vs_memory.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0, name
    csv_lines = (tmp_path / "cmp" / "comparison.csv").read_text().splitlines()
    assert csv_lines[0].startswith("run,scenario,final mAP") and len(csv_lines) == 3
    with pytest.raises(SystemExit, match="no results.json"):
        tool.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "cmp2")])


def test_same_seed_gives_the_same_initial_weights_and_first_task(tmp_path):
    import torch

    from nanodet.util import read_checkpoint

    first = make_runner(tmp_path / "a", scenario="[[disc, ring]]").run()
    second = make_runner(tmp_path / "b", scenario="[[disc, ring]]").run()
    weights = [read_checkpoint(tmp_path / name / "run" / "task_0" / "model.pth")["state_dict"] for name in "ab"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert first["per_task"][0]["per_class_AP"] == second["per_task"][0]["per_class_AP"]


def test_base_model_replaces_task_0_and_the_method_still_stores_its_state(finished_run, tmp_path):
    base_run = finished_run[0] / "run"
    base = base_run / "task_0" / "model.pth"
    runner = tiny_runner(tmp_path.parent / "tiny_synthetic", tmp_path / "replay", method="replay",
                         buffer_size=4, base_model=base)
    results = runner.run()
    first = results["per_task"][0]
    assert first["epochs"] == 0 and first["train_seconds"] == 0 and first["base_model"] == str(base)
    # The same weights, evaluated the same way: the same task-0 numbers as the run that trained them.
    trained = json.loads((base_run / "task_0" / "eval.json").read_text())
    assert first["mAP"] == trained["mAP"] and first["per_class_AP"] == trained["per_class_AP"]
    assert len(json.loads((tmp_path / "replay" / "task_0" / "buffer.json").read_text())) == 4
    assert results["per_task"][1]["epochs"] == 1 and results["per_task"][1]["train_img_per_s"] > 0
    assert json.loads((tmp_path / "replay" / "run.json").read_text())["base_model"] == str(base)


def test_a_missing_base_model_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(RunError, match="no_such.pth"):
        tiny_runner(tmp_path.parent / "tiny_synthetic", tmp_path / "run", base_model=tmp_path / "no_such.pth")


def test_scores_from_the_worker_process_equal_those_computed_in_place(finished_run, tmp_path):
    _, in_place = finished_run
    runner = make_runner(tmp_path)
    runner.background_scoring = True  # as on a GPU: a worker process scores while the next task trains
    in_worker = runner.run()
    for a, b in zip(in_place["per_task"], in_worker["per_task"]):
        for key in ("mAP", "AP50", "voc_mAP50", "per_class_AP", "per_class_voc_AP50", "old_mAP", "new_mAP"):
            assert a[key] == b[key], key
    assert (tmp_path / "run" / "run.log").read_text().count("VOC mAP@0.5:") == 2  # the worker's tables too
    assert not list((tmp_path / "run").glob("task_*/detections.npz"))  # removed once scored


def test_a_run_stopped_while_scoring_resumes_by_scoring_not_training(tmp_path, monkeypatch):
    import nanodet.continual.scoring as scoring

    score_task = scoring.score_task

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(scoring, "score_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_runner(tmp_path).run()
    task_0 = tmp_path / "run" / "task_0"
    assert (task_0 / "trained.json").is_file() and (task_0 / "detections.npz").is_file()
    assert not (task_0 / "done.json").exists()

    monkeypatch.setattr(scoring, "score_task", score_task)

    class CountTasks(pl.Callback):
        trained = []

        def on_train_start(self, trainer, module):
            self.trained.append(module.context.index)

    counter = CountTasks()
    results = make_runner(tmp_path, callbacks=[counter]).run()
    assert counter.trained == [1]  # task 0 was only scored
    assert results["finished"] and results["per_task"][0]["mAP"] is not None
    assert "task 0 already trained: scoring its saved detections" in (tmp_path / "run" / "run.log").read_text()


def test_a_second_process_on_a_run_directory_is_refused_naming_the_holder(tmp_path):
    import os

    from nanodet.continual.runner import run_dir_lock

    with run_dir_lock(tmp_path / "run"):  # as another process would hold it
        with pytest.raises(RunError, match=f"is in use by process {os.getpid()} on "):
            make_runner(tmp_path).run()
    assert not (tmp_path / "run" / "run.json").exists()


def test_a_failed_start_does_not_block_a_corrected_rerun_with_other_settings(tmp_path, monkeypatch):
    import nanodet.continual.runner as runner_module

    def no_data(self):
        raise RunError("the data could not be read")

    monkeypatch.setattr(runner_module.ContinualRunner, "_mark_started", no_data)  # fails where a bad image would
    with pytest.raises(RunError):
        make_runner(tmp_path, seed=1).run()
    monkeypatch.undo()
    assert not (tmp_path / "run" / "run.json").exists()
    results = make_runner(tmp_path, seed=2).run()  # other settings: accepted, nothing had started
    assert results["finished"] and results["seed"] == 2


def test_a_run_killed_inside_its_tasks_and_resumed_ends_with_the_uninterrupted_weights(tmp_path):
    # The CPU pipeline (DataLoader path): killed in task 0's second epoch and again in task 1's
    # (replay's half-buffer batches), resumed each time, with DataLoader workers where the
    # uninterrupted run had none. Each epoch's order and augmentation follow from (seed, epoch).
    import torch

    def run(run_dir, workers, callbacks=()):
        cfg = fixtures_continual.tiny_cfg(tmp_path / "data", epochs=3, extra=[f"device.workers_per_gpu={workers}"])
        runner = ContinualRunner(cfg, parse_scenario(SCENARIO, cfg.class_names), build_method("replay", buffer_size=8),
                                 run_dir=run_dir, seed=7, progress_bar=False, callbacks=callbacks)
        return runner.run()

    whole = run(tmp_path / "whole", workers=0)
    for task in (0, 1):
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            run(tmp_path / "cut", workers=2, callbacks=[Interrupt(task=task, epoch=1)])
        assert (tmp_path / "cut" / f"task_{task}" / "model_last.ckpt").is_file()
    resumed = run(tmp_path / "cut", workers=2)
    for task in (0, 1):
        expected = torch.load(tmp_path / "whole" / f"task_{task}" / "model.pth", weights_only=True)["state_dict"]
        got = torch.load(tmp_path / "cut" / f"task_{task}" / "model.pth", weights_only=True)["state_dict"]
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=f"task {task}: {name}")
    assert [e["mAP"] for e in resumed["per_task"]] == [e["mAP"] for e in whole["per_task"]]


def test_a_run_prints_none_of_the_warnings_the_toolkits_own_choices_provoked(tmp_path, caplog):
    # Lightning warned at every task: a validation_step without a val loader, a checkpoint
    # directory that is not empty, the logging interval longer than an epoch, its own pytree
    # deprecation; and it advertised its cloud logger.
    import logging
    import warnings

    provoked = ("validation_step", "exists and is not empty", "logging interval", "LeafSpec")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        assert make_runner(tmp_path).run()["finished"]
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if any(text in m for text in provoked)], messages
    assert "Tip" not in caplog.text


def test_the_scoring_worker_yields_the_host_to_training():
    # Beside a training loop bound by the host, the worker runs at a lower priority on one thread.
    from nanodet.continual.scoring import TaskScorer

    scorer = TaskScorer(background=True)
    try:
        niceness, threads = scorer._pool.submit(fixtures_continual.priority_and_threads).result()
    finally:
        scorer.close()
    assert niceness >= 10 and threads == 1


def test_a_run_with_best_handover_selects_on_held_out_training_images_and_writes_only_inside_its_run(
        tmp_path, monkeypatch):
    # The fit validates every epoch and keeps the best; upstream's model_best/ under cfg.save_dir
    # (a tool's workspace, by default inside the checkout) must not be written by a continual run.
    from nanodet.continual import runner as runner_module

    selected_on, trained_on = [], []
    real_evaluator, real_train = runner_module.CocoDetectionEvaluator, TaskData.train_dataset

    def recording_evaluator(dataset, *args, **kwargs):
        selected_on.append({r.id for r in dataset.records})
        return real_evaluator(dataset, *args, **kwargs)

    def recording_train(self, task):
        dataset = real_train(self, task)
        trained_on.append({r.id for r in dataset.records})
        return dataset

    monkeypatch.setattr(runner_module, "CocoDetectionEvaluator", recording_evaluator)
    monkeypatch.setattr(TaskData, "train_dataset", recording_train)
    cfg = fixtures_continual.tiny_cfg(tmp_path / "data", extra=["schedule.val_intervals=1",
                                                                "data.validation_fraction=0.25",
                                                                f"save_dir={tmp_path / 'workspace'}"])
    runner = ContinualRunner(cfg, parse_scenario(SCENARIO, cfg.class_names), build_method("naive"),
                             run_dir=tmp_path / "run", seed=7, progress_bar=False, handover="best")
    assert runner.run()["finished"]
    assert not (tmp_path / "workspace").exists()
    assert (tmp_path / "run" / "task_1" / "done.json").is_file()
    training_ids = {r.id for r in TaskData(cfg, runner.scenario).full_train.records}
    assert len(selected_on) == 2 and all(ids and ids <= training_ids for ids in selected_on)  # never test images
    assert all(not (chosen & trained) for chosen in selected_on for trained in trained_on)  # never trained on
    assert f"| {len(selected_on[0])} validation images" in (tmp_path / "run" / "run.log").read_text()


def test_the_validation_split_is_a_seeded_share_of_training_images_held_out_of_every_task(tmp_path):
    cfg = fixtures_continual.tiny_cfg(tmp_path / "data")
    scenario = parse_scenario(SCENARIO, cfg.class_names)
    data = TaskData(cfg, scenario, validation_fraction=0.25, seed=7)
    every_id = {r.id for r in data.full_train.records}
    held_out = data.validation_ids
    assert len(held_out) == round(0.25 * len(every_id)) and held_out < every_id
    assert TaskData(cfg, scenario, validation_fraction=0.25, seed=7).validation_ids == held_out
    assert TaskData(cfg, scenario, validation_fraction=0.25, seed=8).validation_ids != held_out
    plain = TaskData(cfg, scenario)
    for t in range(len(scenario)):
        trained = {r.id for r in data.train_dataset(t).records}
        assert not trained & held_out
        assert trained | {r.id for r in plain.train_dataset(t).records if r.id in held_out} == \
            {r.id for r in plain.train_dataset(t).records}
        validation = data.validation_dataset(t)
        assert {r.id for r in validation.records} <= held_out and validation.mode == "val"
        seen = set(scenario.seen_classes(t))
        assert all(set(int(c) for c in r.labels) <= seen and len(r.labels) for r in validation.records)
        assert [r.id for r in data.eval_dataset(t).records] == [r.id for r in plain.eval_dataset(t).records]
    with pytest.raises(ValueError, match="no validation split"):
        plain.validation_dataset(0)
    with pytest.raises(ValueError, match="data.validation_fraction must be in"):
        TaskData(cfg, scenario, validation_fraction=1.0)


def test_compare_leaves_out_unfinished_runs_and_labels_runs_by_what_differs(finished_run, tmp_path):
    import shutil

    from nanodet.continual.report import compare_runs

    source, _ = finished_run
    results = json.loads((source / "run" / "results.json").read_text())

    def variant(name, **changes):
        folder = tmp_path / name
        shutil.copytree(source / "run", folder)
        (folder / "results.json").write_text(json.dumps({**results, **changes}))
        return folder

    other_seed = variant("seed8", seed=results["seed"] + 1)
    balanced = variant("balanced", method={**results["method"], "buffer_policy": "balanced"})
    stopped = variant("stopped", finished=False, per_task=results["per_task"][:1])
    table = compare_runs([source / "run", other_seed, stopped], tmp_path / "cmp")
    seed = results["seed"]
    assert [row[0] for row in table["rows"]] == [f"naive (seed {seed})", f"naive (seed {seed + 1})"]
    assert table["skipped"] == [f"{stopped} (1 of 2 tasks)"]
    assert "Left out, unfinished" in (tmp_path / "cmp" / "comparison.md").read_text()
    table = compare_runs([source / "run", balanced, stopped], tmp_path / "cmp2", include_unfinished=True)
    assert [row[0] for row in table["rows"]] == [
        "naive (buffer policy None)", "naive (buffer policy balanced)",
        "naive (buffer policy None) [unfinished: 1 of 2 tasks]"]
    with pytest.raises(ValueError, match="no finished run"):
        compare_runs([stopped], tmp_path / "cmp3")


def test_a_missing_pretrained_weights_file_is_refused_before_any_data_is_read(tmp_path):
    cfg = fixtures_continual.tiny_cfg(tmp_path / "data", extra=[f"model.arch.backbone.pretrain={tmp_path / 'no.pth'}"])
    with pytest.raises(FileNotFoundError, match="no.pth"):
        ContinualRunner(cfg, parse_scenario(SCENARIO, cfg.class_names), build_method("naive"), run_dir=tmp_path / "run")
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()


def test_a_comparison_figure_is_named_after_the_runs_scenario_and_tells_every_line_apart():
    from nanodet.continual.report import line_style, plot_title

    def run(scenario, tasks):
        return {"scenario": scenario, "config_name": "synthetic", "per_task": [{}] * tasks}

    # The base model's one-task run comes first in a folder's order; the figure is about 15p1.
    assert plot_title([run("custom", 1), run("15p1", 6), run("15p1", 6), run("joint", 1)]) == "15p1 on synthetic"
    assert plot_title([run("joint", 1)]) == "joint on synthetic"
    assert plot_title([]) == ""
    styles = [tuple(line_style(i).values()) for i in range(40)]
    assert len(set(styles)) == 40
