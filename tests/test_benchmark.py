"""tools/benchmark.py trains the real methods under Lightning on the CPU, with tiny sizes, and
reports every phase of the step; StepTimer's phases add up to the measured steps' time."""

from pathlib import Path

import pytest

from fixtures_tools import load_tool

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark():
    return load_tool("benchmark")


def test_benchmark_runs_real_methods_on_both_paths_and_prints_a_row_each(tmp_path, capsys):
    benchmark = load_benchmark()
    args = ["--cfg", str(ROOT / "cfg" / "demo.yml"), "--method", "joint", "replay", "ld",
            "--set", "device.batchsize_per_gpu=2", "--steps", "2", "--warmup", "1", "--data", str(tmp_path / "data"),
            "--train-images", "12", "--input-size", "64", "--reference", "--reference-steps", "1",
            "--set", "device.workers_per_gpu=0", "--device", "cpu", "--json", str(tmp_path / "results.json")]
    results = benchmark.main(args)
    assert [(r["method"], r["path"]) for r in results] == [
        ("joint", "fast"), ("joint", "reference"), ("replay", "fast"), ("replay", "reference"),
        ("ld", "fast"), ("ld", "reference")]
    for result in results:
        steps = 2 if result["path"] == "fast" else 1  # --reference-steps
        assert result["steps"] == steps and result["images"] == 2 * steps and result["img_per_s"] > 0
        assert set(result["ms"]) == set(benchmark.PHASES)
        assert all(v >= 0 for v in result["ms"].values()) and result["ms"]["backward"] > 0
        # at least 2 batches an epoch, so the measured steps 1 and 2 are the epoch's batches 1 and 2
        assert result["steps_per_epoch"] >= 3 and [p[:2] for p in result["per_step"]] == [[1, 1], [2, 2]][:steps]
        assert sum(p[2] for p in result["per_step"]) == pytest.approx(sum(result["ms"].values()) * steps, rel=1e-3)
        assert all(p[4] > 0 for p in result["per_step"])  # the host's wall time of each step
        for p in result["per_step"]:  # each step's phases, which add up to its time
            assert set(p[5]) <= set(benchmark.PHASES) and sum(p[5].values()) == pytest.approx(p[2], abs=0.01)
        # The GC freeze comes after the third step: in the fast runs' last step, never in the 2-step ones.
        assert (result["gc_freeze"] is not None) == (result["path"] == "fast")
        assert result["step_ms"]["epoch_first_mean"] is None
        assert result["step_ms"]["median"] <= result["step_ms"]["max"]
    joint, ld = results[0], results[4]
    assert joint["task"] == 0 and ld["task"] == 1
    # LD trains only the neck and head; joint trains everything.
    assert ld["trainable_parameters"] < joint["trainable_parameters"] / 2
    out = capsys.readouterr().out
    assert out.count("| fast |") == 3 and out.count("| reference |") == 3 and "ld: fast / reference" in out
    assert (tmp_path / "results.json").is_file()


def test_step_timer_times_each_step_and_the_garbage_collections_inside_it():
    import gc

    from fixtures_lightning import TinyModule, bare_trainer

    from nanodet.trainer.step_timer import StepTimer

    def collect_in_the_third_measured_step(module):
        if module.global_step == 3:
            gc.collect()  # a full collection

    timer = StepTimer(skip_steps=1)
    bare_trainer([timer], max_steps=6).fit(TinyModule(images=12, on_step=collect_in_the_third_measured_step))
    result = timer.result()
    assert timer._on_gc not in gc.callbacks  # removed when the fit ends
    # 3 batches an epoch: measured steps 1..5 are batches 1, 2, 0, 1, 2
    assert [p[:2] for p in result["per_step"]] == [[1, 1], [2, 2], [3, 0], [4, 1], [5, 2]]
    assert result["python_gc"]["full_collections"] >= 1
    third = result["per_step"][2]
    assert third[3] > 0 and third[3] <= third[2]  # the collection's time, part of its step's time
    assert sum(third[5].values()) == pytest.approx(third[2], abs=0.01)  # and of one of its phases
    assert result["python_gc"]["ms"] >= third[3] - 0.01  # per_step is rounded to 0.01 ms
    assert result["step_ms"]["epoch_first_mean"] == pytest.approx(third[2], abs=0.01)


def test_slow_steps_are_named_with_their_place_host_time_and_gc(capsys):
    benchmark = load_benchmark()
    per_step = [[s, s % 17, 50.0, 0.0, 50.0] for s in range(6, 26)]
    per_step[11] = [17, 0, 160.0, 2.0, 161.0, {"data": 1.5, "captured_step": 158.5}]  # an epoch's first step
    result = {"steps": 20, "per_step": per_step, "step_ms": {"median": 50.0},
              "python_gc": {"full_collections": 0, "ms": 2.0}, "gc_freeze": {"objects": 1000, "collect_ms": 800.0}}
    benchmark.print_gc_and_slow_steps(result)
    out = capsys.readouterr().out
    assert "one collection of 800 ms, then 1,000 objects frozen" in out
    assert "1 of 20 steps over 1.5x the median (50.0 ms), 110 ms beyond it" in out
    assert "step 17 (batch 0) 160 ms, host 161, GC 2, most in captured_step 158" in out


def test_a_reference_step_count_below_one_is_refused():
    with pytest.raises(SystemExit, match="--reference-steps must be at least 1, got 0"):
        load_benchmark().main(["--cfg", str(ROOT / "cfg" / "demo.yml"), "--reference-steps", "0"])
