"""tools/benchmark.py runs end to end on the CPU with tiny sizes and reports every phase."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("tool_benchmark", ROOT / "tools" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method", ["plain", "ld"])
def test_benchmark_runs_both_paths_on_the_cpu_and_prints_a_row_each(tmp_path, capsys, method):
    benchmark = load_benchmark()
    args = ["--cfg", str(ROOT / "cfg" / "demo.yml"), "--method", method, "--batch-size", "2",
            "--steps", "2", "--warmup", "1", "--data", str(tmp_path / "data"), "--train-images", "4",
            "--input-size", "96", "--reference", "--workers", "0", "--device", "cpu",
            "--json", str(tmp_path / "results.json")]
    if method == "ld":
        args += ["--precision", "bf16", "--channels-last"]
    results = benchmark.main(args)
    assert [r["path"] for r in results] == ["fast", "reference"]
    for result in results:
        assert result["img_per_s"] > 0 and result["method"] == method
        assert set(result["ms"]) == set(benchmark.PHASES) and all(v >= 0 for v in result["ms"].values())
    out = capsys.readouterr().out
    assert out.count("| fast |") == 1 and out.count("| reference |") == 1 and "speed-up" in out
    assert (tmp_path / "results.json").is_file()
