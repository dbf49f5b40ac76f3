"""TrainingReadout: training scalars reach the progress bar, the logger and the log line without
the host reading a device tensor, in step order, each with the step it belongs to."""

import pytest
import torch

from nanodet.trainer import readout as readout_module
from nanodet.trainer.builders import LossProgressBar
from nanodet.trainer.readout import Reading, TrainingReadout
from fixtures_tools import as_args, load_tool, tiny_overrides


class CopyInFlight:
    """A device copy's event, landed only when the test says so (or when waited for)."""

    def __init__(self):
        self.landed = False

    def query(self):
        return self.landed

    def synchronize(self):
        self.landed = True


@pytest.fixture
def copies_in_flight(monkeypatch):
    """TrainingReadout's copies as a GPU makes them: values unknown until their event lands."""
    events = []

    def copy(step, scalars, context):
        events.append(CopyInFlight())
        host = torch.stack([v.float() for v in scalars.values()])
        return Reading(step, dict.fromkeys(scalars, float("nan")), context), host, events[-1]

    monkeypatch.setattr(TrainingReadout, "_copy", staticmethod(copy))
    return events


def test_requested_steps_come_out_in_order_once_landed_and_all_when_waited_for(copies_in_flight):
    readout = TrainingReadout()
    for step in range(3):
        readout.request(step, {"loss": torch.tensor(float(step))}, lr=0.1 * step)
    assert readout.landed() == [] and readout.newest() is None  # nothing has landed
    copies_in_flight[1].landed = True
    assert readout.landed() == []  # step 1 waits behind step 0: the logger gets steps in order
    copies_in_flight[0].landed = True
    assert [(r.step, r.values["loss"], r.context["lr"]) for r in readout.landed()] == [(0, 0.0, 0.0), (1, 1.0, 0.1)]
    assert [r.step for r in readout.landed(wait=True)] == [2]
    assert readout.newest() is None  # what the logger requests is not what a display watches


def test_watching_keeps_one_copy_in_flight_and_shows_the_newest_landed(copies_in_flight):
    readout = TrainingReadout()
    readout.watch(0, {"loss": torch.tensor(5.0)})
    readout.watch(1, {"loss": torch.tensor(6.0)})  # step 0 still in flight: no second copy queued
    assert len(copies_in_flight) == 1 and readout.newest() is None
    copies_in_flight[0].landed = True
    assert readout.newest().values == {"loss": 5.0}
    readout.watch(2, {"loss": torch.tensor(7.0)})
    assert len(copies_in_flight) == 2
    copies_in_flight[1].landed = True
    assert (readout.newest().step, readout.newest().values["loss"]) == (2, 7.0)


def test_on_a_cpu_values_land_at_once():
    readout = TrainingReadout()
    readout.request(4, {"a": torch.tensor(1.5), "b": torch.tensor([2.0])}, note="x")
    [reading] = readout.landed()
    assert (reading.step, reading.values, reading.context) == (4, {"a": 1.5, "b": 2.0}, {"note": "x"})
    assert readout_module.TrainingReadout().landed(wait=True) == []


def test_the_progress_bar_shows_each_steps_loss_and_nothing_logged_is_converted_per_batch(tmp_path, monkeypatch):
    # Lightning turns every tensor logged for the progress bar into a number after every batch
    # (a wait for the GPU each time): the loss must reach the bar through the readout instead.
    seen = []

    def record(self, trainer, pl_module, outputs, batch, batch_idx):
        progress_bar_entries = [key for key, item in trainer._results.items() if item.meta.prog_bar]
        seen.append((progress_bar_entries, self.get_metrics(trainer, pl_module)["loss"], float(outputs["loss"])))

    monkeypatch.setattr(LossProgressBar, "on_train_batch_end", record)
    load_tool("train").main(["cfg/demo.yml", "--seed", "0", *as_args(tiny_overrides(tmp_path, epochs=1))])
    assert len(seen) == 3  # 24 images, batch 8
    for entries, shown, loss in seen:
        assert entries == []
        assert shown == pytest.approx(loss, abs=1e-4)
