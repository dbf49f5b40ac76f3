"""tools/sync_probe.py: per-fit step times of a run, and the stacks at which the host waits for the GPU."""

import pytest

from fixtures_continual import tiny_runner
from fixtures_tools import load_tool


@pytest.fixture(scope="module")
def probe_tool():
    return load_tool("sync_probe")


def test_every_fit_of_a_run_gets_its_step_times(probe_tool, tmp_path):
    probe = probe_tool.StepProbe(on_summary=lambda summary: None)
    tiny_runner(tmp_path / "data", tmp_path / "run", epochs=2, callbacks=[probe]).run()
    assert [s["fit"] for s in probe.summaries] == [0, 1]  # one per task
    for summary in probe.summaries:
        assert summary["steps"] > 2  # every batch of both epochs
        assert 0 < summary["inside_step_median_ms"] <= summary["step_median_ms"] + 1e-6
        assert summary["seconds"] * 1e3 >= summary["step_median_ms"]
        assert summary["epoch_first_step_mean_ms"] is not None  # epoch 1 begins inside the timed steps


def test_the_statistics_split_a_step_into_inside_and_between():
    starts, ends = [0.0, 1.0, 2.5], [0.5, 2.0, 3.0]  # steps end 1.5 s and 1.0 s apart
    summary = load_tool("sync_probe").StepProbe.summarise(starts, ends, [True, False, True], skip=0)
    assert summary["step_mean_ms"] == 1250.0
    assert summary["inside_step_median_ms"] == 750.0  # 1.0 and 0.5 s inside the steps
    assert summary["between_steps_median_ms"] == 500.0  # 0.5 and 0.5 s between them
    assert summary["epoch_first_step_mean_ms"] == 1000.0


def test_a_synchronisation_warning_counts_its_stack_and_others_pass_through(probe_tool):
    probe = probe_tool.StepProbe()

    def read_back():
        for _ in range(2):
            assert probe.saw_warning(UserWarning("called a synchronizing CUDA operation"))

    read_back()
    assert not probe.saw_warning(UserWarning("something else"))
    [(stack, count)] = probe.waits.items()
    assert count == 2 and any(frame.endswith(":read_back") for frame in stack)
