"""Our runs beside the paper's VOC2007 results in relative terms: the share of the base kept after
each 15p1 task, 19p1's final mAP over LD's, and the ranks in both."""

import json

import pytest

from nanodet.continual import paper
from nanodet.continual.seeds import collect, write_seed_report


def write_run(root, seed, scenario, method, maps):
    results = {
        "format": 1, "scenario": scenario, "seed": seed, "finished": True, "config_name": "synthetic",
        "tasks": [["a"]] * len(maps), "method": {"method": method}, "epochs_per_task": 100,
        "per_task": [{"mAP": m, "old_classes": ["a"] if t else [], "train_seconds": 1.0} for t, m in enumerate(maps)],
        "final": {"mAP": maps[-1], "voc_mAP50": maps[-1], "old_mAP": maps[-1], "new_mAP": 0.3, "mean_forgetting": 0.1},
        "parameters": {"trainable": 10, "in_memory": 20}, "buffer_bytes": 0,
    }
    folder = root / f"seed{seed}" / scenario / method
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))


@pytest.fixture
def report_root(tmp_path):
    root = tmp_path / "report"
    for seed, ld_t5 in ((1, 0.20), (2, 0.30), (3, 0.40)):
        write_run(root, seed, "15p1", "ld", [0.6, 0.5, 0.4, 0.3, 0.25, ld_t5])
        write_run(root, seed, "15p1", "naive", [0.6, 0.06, 0.0, 0.0, 0.0, 0.0])
        write_run(root, seed, "19p1", "ld", [0.6, 0.5])
        write_run(root, seed, "19p1", "sid", [0.6, 0.25 if seed == 1 else 0.75])
    write_run(root, 1, "15p1", "ld_box_replay", [0.6, 0.6, 0.6, 0.6, 0.6, 0.6])  # not in the paper: left out
    return root


def test_15p1_shares_of_the_base_are_ours_over_seeds_beside_the_papers(report_root):
    rows = paper.table_15p1(collect(report_root))
    ld = next(r for r in rows if r.startswith("| ld |")).split(" | ")
    assert ld[1] == "3"
    assert ld[2] == f"0.83 ± 0.00 / {0.228 / 0.319:.2f}"  # T1: 0.5 / 0.6 on every seed; the paper's 0.71
    assert ld[6] == f"0.50 ± 0.17 / {0.096 / 0.319:.2f}"  # T5: 0.2, 0.3, 0.4 over 0.6
    assert ld[7] == "1 / 1 |"  # LD keeps the most at T5 here and in the paper (against naive)
    naive = next(r for r in rows if r.startswith("| naive |")).split(" | ")
    assert naive[2] == f"0.10 ± 0.00 / {0.073 / 0.319:.2f}" and naive[7] == "2 / 2 |"
    assert not any("ld_box_replay" in r for r in rows)


def test_19p1_is_paired_by_seed_against_ld_and_ranked_in_both(report_root):
    rows = paper.table_19p1(collect(report_root))
    sid = next(r for r in rows if r.startswith("| sid |")).split(" | ")
    assert sid[2] == f"1.17 ± 0.58 / {0.228 / 0.236:.2f}"  # 0.5, 1.5, 1.5 of LD's 0.5
    assert sid[3] == "1 / 2 |"  # ours above LD on average, the paper's below: an ordering that differs
    assert next(r for r in rows if r.startswith("| ld |")).split(" | ")[2] == "1.00 ± 0.00 / 1.00"


def test_the_seed_report_carries_the_section_and_its_plot_only_when_the_papers_methods_ran(report_root, tmp_path):
    write_seed_report(report_root, tmp_path / "out")
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Against the paper" in report and "![15p1 against the paper](15p1_against_paper.png)" in report
    assert (tmp_path / "out" / "15p1_against_paper.png").stat().st_size > 0
    other = tmp_path / "other"
    write_run(other, 1, "10p10", "ld", [0.6, 0.5])
    write_seed_report(other, tmp_path / "out_other")
    assert "Against the paper" not in (tmp_path / "out_other" / "report.md").read_text()
