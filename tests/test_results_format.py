"""results.json and eval.json in one versioned format (nanodet/continual/results.py)."""

import json
import math

import pytest

from nanodet.continual.report import load_run
from nanodet.continual.results import (FORMAT, build_results, read_results, read_task_entry, task_entry,
                                       task_scores)
from nanodet.continual.scenario import parse_scenario

CLASSES = ["cat", "dog", "car"]


def scores(ap_cat, ap_dog, ap_car):
    per_class = {"cat": ap_cat, "dog": ap_dog, "car": ap_car}
    coco = {"mAP": 0.5, "AP_50": 0.7, "AP_75": 0.4, "AP_small": 0.1, "AP_m": 0.2, "AP_l": math.nan,
            "per_class_AP": per_class, "per_class_AP50": per_class}
    voc = {"mAP": 0.6, "per_class_AP": per_class}
    return task_scores(coco, voc, old=["cat", "dog"], new=["car"], scoring_seconds=0.1)


def entry(t, *aps):
    known = {"task": t, "new_classes": [], "old_classes": [], "seen_classes": [], "eval_images": 3,
             "train_seconds": 1.0, "parameters_in_memory": 10, "trainable_parameters": 5}
    return task_entry(known, scores(*aps))


def test_scores_use_one_set_of_metric_names_and_a_task_entry_reads_as_json_would():
    got = entry(0, 0.2, 0.4, 0.9)
    assert {"AP50", "AP75", "AP_small", "AP_medium", "AP_large"} <= set(got)
    assert not {"AP_50", "AP_m", "AP_l"} & set(got)
    assert got["old_mAP"] == pytest.approx(0.3) and got["new_mAP"] == 0.9
    assert got == json.loads(json.dumps(got))  # nothing that JSON would change (nan is None)
    assert got["AP_large"] is None


def test_results_carry_their_format_and_forgetting(tmp_path):
    scenario = parse_scenario("[[cat, dog], [car]]", CLASSES)
    entries = [entry(0, 0.8, 0.6, 0.0), entry(1, 0.5, 0.3, 0.9)]
    results = build_results({"method": {"method": "naive"}}, scenario, entries, finished=True)
    assert results["format"] == FORMAT == 1 and results["finished"]
    assert results["task_matrix"][1][0] == pytest.approx(0.4)
    assert results["per_task"][1]["forgetting"] == {"0": pytest.approx(0.3)}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert load_run(tmp_path) == results


def test_files_without_a_format_are_read_with_todays_names(tmp_path):
    old_entry = {"task": 0, "mAP": 0.5, "AP50": 0.7, "AP_small": 0.1, "AP_m": 0.2, "AP_l": None}
    (tmp_path / "results.json").write_text(json.dumps({"method": {"method": "ld"}, "per_task": [old_entry]}))
    results = read_results(tmp_path / "results.json")
    assert results["format"] == 1
    assert results["per_task"][0]["AP_medium"] == 0.2 and "AP_m" not in results["per_task"][0]
    (tmp_path / "eval.json").write_text(json.dumps(old_entry))
    assert read_task_entry(tmp_path / "eval.json")["AP_large"] is None


def test_a_file_of_a_newer_format_or_not_json_is_refused_by_name(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"format": FORMAT + 1, "per_task": []}))
    with pytest.raises(ValueError, match=r"results.json: results format 2 is newer than this toolkit's \(1\)"):
        read_results(tmp_path / "results.json")
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="results.json: malformed JSON"):
        read_results(tmp_path / "results.json")
