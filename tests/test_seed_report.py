"""Runs over seeds: mean ± std per method, the seeds still missing, and differences claimed only
beyond the seeds' spread."""

import json

import pytest

from nanodet.continual.metrics import mean_std
from nanodet.continual.seeds import collect, differs, write_seed_report
from tools import seed_report


def write_run(root, seed, scenario, method, final_map, finished=True, old=0.1, buffer_bytes=0):
    results = {
        "format": 1, "scenario": scenario, "seed": seed, "finished": finished, "config_name": "synthetic",
        "tasks": [["a"], ["b"]], "method": {"method": method}, "epochs_per_task": 25,
        "per_task": [{"mAP": 0.6, "old_classes": [], "startup_seconds": 1.0, "train_seconds": 10.0,
                      "eval_seconds": 1.0},
                     {"mAP": final_map, "old_classes": ["a"], "startup_seconds": 0.5, "train_seconds": 2.0,
                      "eval_seconds": 0.5}],
        "final": {"mAP": final_map, "voc_mAP50": final_map + 0.1, "old_mAP": old, "new_mAP": 0.3,
                  "mean_forgetting": 0.2},
        "parameters": {"trainable": 10, "in_memory": 20}, "buffer_bytes": buffer_bytes,
    }
    folder = root / f"seed{seed}" / scenario / method
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))


def test_differences_need_three_seeds_and_ranges_that_do_not_overlap():
    assert differs([0.5, 0.52, 0.51], [0.40, 0.45, 0.49]) == 1
    assert differs([0.40, 0.45, 0.49], [0.5, 0.52, 0.51]) == -1
    assert differs([0.5, 0.52, 0.44], [0.40, 0.45, 0.49]) == 0  # 0.44 sits inside the other's range
    assert differs([0.9, 0.9], [0.1, 0.1, 0.1]) == 0  # two seeds are too few to claim anything
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0) and mean_std([4.0]) == (4.0, 0.0) and mean_std([]) is None


def test_the_report_averages_seeds_marks_what_is_missing_and_compares(tmp_path):
    root = tmp_path / "report"
    for seed, (ld, naive) in zip((1, 2, 3), [(0.50, 0.02), (0.52, 0.03), (0.54, 0.01)]):
        write_run(root, seed, "15p1", "ld", ld)
        write_run(root, seed, "15p1", "naive", naive)
    write_run(root, 1, "15p1", "replay", 0.4, buffer_bytes=76_800_000)
    write_run(root, 2, "15p1", "replay", 0.3, finished=False)
    summary = seed_report.main([str(root), "--out", str(tmp_path / "out"), "--seeds", "1", "2", "3"])
    rows = {row[0]: row for row in summary["15p1"]}
    assert rows["ld"][1] == "3" and rows["ld"][2] == "0.520 ± 0.020"
    assert rows["ld"][7] == "15 ± 0"  # run seconds: start-up, training and inference of both tasks
    assert rows["replay"][1] == "1" and rows["replay"][2] == "0.400"  # one seed: no spread shown
    assert rows["replay"][-1] == "seed 2 (unfinished), seed 3" and rows["replay"][-2] == "76.8"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| 0 ld |  | > | ~ |" in report  # LD beats naive on every seed; replay has one seed only
    assert (tmp_path / "out" / "map_per_task_15p1.png").stat().st_size > 0
    assert (tmp_path / "out" / "seeds_15p1.csv").read_text().startswith("method,seeds,final mAP")


def test_a_flat_folder_is_one_seed_and_an_empty_one_is_refused(tmp_path):
    write_run(tmp_path, 7, "19p1", "ld", 0.4)
    flat = tmp_path / "seed7"  # a run folder with no seed folders above it: the seed from results.json
    cells = collect(flat)
    assert list(cells) == [("19p1", "ld")] and list(cells["19p1", "ld"].runs) == [7]
    with pytest.raises(ValueError, match="no results.json"):
        write_seed_report(tmp_path / "seed7" / "19p1", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no such report folder"):
        collect(tmp_path / "missing")


def test_a_folder_of_committed_scenario_method_files_is_one_seed(tmp_path):
    write_run(tmp_path / "tree", 1234, "15p1", "ld_pseudo_labels", 0.45)
    write_run(tmp_path / "tree", 1234, "joint", "naive", 0.66)
    flat = tmp_path / "flat"
    flat.mkdir()
    tree = tmp_path / "tree" / "seed1234"
    (flat / "15p1_ld_pseudo_labels.json").write_text((tree / "15p1" / "ld_pseudo_labels" / "results.json").read_text())
    (flat / "joint_naive.json").write_text((tree / "joint" / "naive" / "results.json").read_text())
    (flat / "notes.json").write_text("{}")  # not SCENARIO_METHOD: ignored
    cells = collect(flat)
    assert sorted(cells) == [("15p1", "ld_pseudo_labels"), ("joint", "naive")]
    assert list(cells["15p1", "ld_pseudo_labels"].runs) == [1234]
