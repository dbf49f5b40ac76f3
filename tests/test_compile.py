"""``device.compile``: the detector's blocks compiled in place while a fit trains, plain afterwards.

Never inductor here (minutes on a CPU): a counting backend runs dynamo's captured graphs as they
are, so every test sees whether and when a compiled graph was made and run.
"""

import copy

import pytest
import pytorch_lightning as pl
import torch

import fixtures_continual  # noqa: I001 - tests/ is on sys.path (conftest)
from fixtures_continual import TWO_TASKS
from nanodet.continual import ContinualRunner, build_method, parse_scenario
from nanodet.continual.methods import Teacher
from nanodet.model.arch import build_model
from nanodet.trainer import compile as compiling
from nanodet.trainer.task import TrainingTask
from nanodet.util import read_checkpoint, read_config

DEMO = fixtures_continual.ROOT / "cfg/demo.yml"


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class CountingBackend:
    """A torch.compile backend: ``graphs`` counts captures (compilations), ``runs`` graph calls."""

    def __init__(self):
        self.graphs = 0
        self.runs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1

        def run(*args):
            self.runs += 1
            return gm.forward(*args)

        return run


@pytest.fixture(scope="module")
def cfg():
    return read_config(DEMO)


def make_model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg.model).eval()


def images(batch=2, size=64, seed=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def compiled_modules(model):
    return [name for name, m in model.named_modules() if m.__dict__.get("_compiled_call_impl") is not None]


def assert_blocks_cover(model, names, parts=("backbone", "fpn", "head")):
    """``names`` are blocks (regional compilation): none inside another, each with parameters,
    and together they hold every parameter of ``parts`` exactly once, and nothing else."""
    assert names and all(n.split(".")[0] in parts for n in names)
    assert not any(b.startswith(a + ".") for a in names for b in names)
    owners = {}
    for param_name, _ in model.named_parameters():
        holders = [n for n in names if param_name.startswith(n + ".")]
        if param_name.split(".")[0] in parts:
            assert len(holders) == 1, param_name
            owners.setdefault(holders[0], []).append(param_name)
        else:
            assert not holders, param_name
    assert set(owners) == set(names)
    assert len(names) > 3 * len(parts)  # blocks, not whole parts


# ------------------------------------------------------------------------- compile_mode
@pytest.mark.parametrize("value, mode", [(False, None), (None, None), (True, "default")]
                         + [(m, m) for m in compiling.MODES])
def test_compile_mode_of_the_config_value(value, mode):
    assert compiling.compile_mode(value) == mode


@pytest.mark.parametrize("value", ["fast", 1, 0, "true", "Default", ""])
def test_compile_mode_refuses_other_values_naming_the_key_and_value(value):
    with pytest.raises(ValueError, match="device.compile") as err:
        compiling.compile_mode(value)
    assert repr(value) in str(err.value)


def test_training_task_reads_device_compile(cfg):
    assert TrainingTask(cfg).compile_mode is None  # off by default
    on = copy.deepcopy(cfg)
    on.device.compile = True
    assert TrainingTask(on).compile_mode == "default"
    on.device.compile = "fast"
    with pytest.raises(ValueError, match="'fast'"):
        TrainingTask(on)


# ------------------------------------------------------------------------- compile_detector
def test_inductor_gets_the_mode_other_backends_none(cfg, monkeypatch):
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen.append((self, kw)))
    model = make_model(cfg)
    blocks = compiling.compile_detector(model, "max-autotune")
    assert [s for s, _ in seen] == blocks
    names = {id(m): n for n, m in model.named_modules()}
    assert_blocks_cover(model, [names[id(b)] for b in blocks])
    assert all(kw == {"backend": "inductor", "mode": "max-autotune", "dynamic": False} for _, kw in seen)
    seen.clear()
    backend = CountingBackend()
    compiling.compile_detector(model, "max-autotune", backend=backend)
    assert all(kw == {"backend": backend, "dynamic": False} for _, kw in seen)
    seen.clear()
    compiling.compile_detector(model, "default", dynamic=True)
    assert seen and all(kw == {"backend": "inductor", "mode": "default", "dynamic": True} for _, kw in seen)


def test_dynamic_shapes_share_one_graph_among_blocks_of_other_sizes(cfg):
    """``device.compile_dynamic``: ShuffleNet units of every stage (other channels, other
    resolutions) and the neck's modules of every level reuse graphs instead of compiling one each,
    with the same outputs."""
    graphs = {}
    for dynamic in (False, True):
        torch._dynamo.reset()
        model = make_model(cfg)
        with torch.no_grad():
            expected = model(images())
        backend = CountingBackend()
        compiling.compile_detector(model, "default", backend=backend, dynamic=dynamic)
        with torch.no_grad():
            torch.testing.assert_close(model(images()), expected)
        graphs[dynamic] = backend.graphs
    assert graphs[True] < graphs[False], graphs


def test_compiled_detector_matches_eager_and_keeps_its_state_dict(cfg):
    model = make_model(cfg)
    x = images()
    keys = list(model.state_dict())
    with torch.no_grad():
        expected = model(x)
    backend = CountingBackend()
    blocks = compiling.compile_detector(model, "default", backend=backend)
    assert_blocks_cover(model, compiled_modules(model))
    with torch.no_grad():
        got = model(x)
    # Every block went through dynamo; blocks of one class and shape share a graph.
    assert backend.runs >= len(blocks) and 3 <= backend.graphs < len(blocks)
    torch.testing.assert_close(got, expected)
    assert list(model.state_dict()) == keys and not any("_orig_mod" in k for k in keys)
    runs, graphs = backend.runs, backend.graphs
    with torch.no_grad():
        model(x)
    assert backend.runs > runs and backend.graphs == graphs  # cached graphs: no recompilation


def test_compiled_training_step_matches_eager(cfg):
    """Train-mode BatchNorm (batch statistics, running-stat updates) and gradients through the
    compiled graphs equal those of the plain model."""
    eager_model = make_model(cfg).train()
    model = copy.deepcopy(eager_model)
    backend = CountingBackend()
    compiling.compile_detector(model, "default", backend=backend)
    x = images(batch=4)
    outputs = []
    for m in (eager_model, model):
        out = m(x)
        (out.float() ** 2).mean().backward()
        outputs.append(out.detach())
    assert backend.runs >= 3
    torch.testing.assert_close(outputs[1], outputs[0])
    eager_grads = dict(eager_model.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, eager_grads[name].grad, msg=name)
    eager_buffers = dict(eager_model.named_buffers())
    for name, b in model.named_buffers():
        torch.testing.assert_close(b, eager_buffers[name], msg=name)
    assert not torch.equal(model.head.cls_convs[0][0].dwnorm.running_mean,
                           make_model(cfg).head.cls_convs[0][0].dwnorm.running_mean)  # they did move


def test_forward_with_towers_goes_through_the_compiled_head(cfg):
    model = make_model(cfg)
    with torch.no_grad():
        feats = model.fpn(model.backbone(images()))
        preds, towers = model.head.forward_with_towers(feats)
    backend = CountingBackend()
    compiling.compile_detector(model, "default", backend=backend)
    torch._dynamo.reset()
    with torch.no_grad():
        got_preds, got_towers = model.head.forward_with_towers(feats)  # only this, nothing else
    assert backend.graphs >= 1 and backend.runs >= len(model.head.gfl_cls)  # the head's blocks, no others
    torch.testing.assert_close(got_preds, preds)
    assert len(got_towers) == len(towers) == len(feats)
    for got, want in zip(got_towers, towers):
        torch.testing.assert_close(got, want)
    graphs = backend.graphs
    with torch.no_grad():  # plain forward: the same predictions through the same blocks' graphs
        torch.testing.assert_close(model.head(feats), preds)
    assert backend.graphs == graphs


# ------------------------------------------------------------------------- restore
def test_restore_gives_plain_modules_and_copies_run_their_own_weights(cfg):
    model = make_model(cfg)
    x, other = images(), images(size=96, seed=2)
    backend = CountingBackend()
    parts = compiling.compile_detector(model, "default", backend=backend)
    with torch.no_grad():
        before = model(x)
    compiling.restore(parts)
    assert compiled_modules(model) == []
    assert all(part._compiled_call_impl is None for part in parts)
    graphs, runs = backend.graphs, backend.runs
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)
        model(other)  # a new shape would compile if anything were still compiled
    assert (backend.graphs, backend.runs) == (graphs, runs)
    compiling.restore(parts)  # restoring twice is harmless

    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.head.gfl_cls[0].weight.zero_()
        clone.head.gfl_cls[0].bias.fill_(3.0)
        changed, original = clone(x), model(x)
    assert not torch.allclose(changed, before)  # the copy runs its own weights...
    torch.testing.assert_close(original, before)  # ...and the original is untouched
    assert compiled_modules(clone) == []

    compiling.compile_detector(model, "default", backend=backend)  # the next fit compiles again
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)
    assert backend.runs > runs


# ------------------------------------------------------------------------- eager
def test_eager_runs_compiled_modules_without_compiling(cfg):
    model = make_model(cfg)
    x, other = images(), images(batch=1, size=96, seed=2)
    with torch.no_grad():
        expected = model(other)
    backend = CountingBackend()
    compiling.compile_detector(model, "default", backend=backend)
    with torch.no_grad():
        model(x)
        graphs, runs = backend.graphs, backend.runs
        with compiling.eager():
            torch.testing.assert_close(model(other), expected)  # new shape: no recompilation
            model(x)  # cached graphs are not run either
        assert (backend.graphs, backend.runs) == (graphs, runs)
        model(x)  # the stance is back to default after the block: the cached graphs run again
    assert backend.runs > runs and backend.graphs == graphs


def test_eager_restores_the_stance_after_an_error():
    backend = CountingBackend()
    add_one = torch.compile(lambda t: t + 1, backend=backend)
    with pytest.raises(RuntimeError, match="boom"), compiling.eager():
        torch.testing.assert_close(add_one(torch.zeros(2)), torch.ones(2))
        raise RuntimeError("boom")
    assert backend.runs == 0
    add_one(torch.zeros(2))
    assert (backend.graphs, backend.runs) == (1, 1)


# ------------------------------------------------------------------------- mark_step_begin
@pytest.mark.parametrize("mode, marks", [(None, 0), ("default", 0), ("max-autotune-no-cudagraphs", 0),
                                         ("reduce-overhead", 1), ("max-autotune", 1)])
def test_mark_step_begin_only_for_cuda_graph_modes(mode, marks, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: calls.append(1))
    compiling.mark_step_begin(mode)
    assert len(calls) == marks


# ------------------------------------------------------------------------- teacher
def test_a_teacher_compiled_on_its_own_keeps_its_weights(cfg):
    """(A teacher sharing the student's backbone, Latent Distillation's, is compiled in the run below.)"""
    model = make_model(cfg)
    teacher = Teacher(model)  # copied before anything is compiled, as at a task's start
    student_backend, teacher_backend = CountingBackend(), CountingBackend()
    compiling.compile_detector(teacher.model, "default", backend=teacher_backend)
    assert_blocks_cover(teacher.model, compiled_modules(teacher.model))
    compiling.compile_detector(model, "default", backend=student_backend)
    x = images()
    before = teacher(x)
    with torch.no_grad():
        student_before = model(x)
    assert teacher_backend.runs >= 3 and student_backend.runs >= 3  # each ran its own graphs
    with torch.no_grad():  # the student learns: every weight moves
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        assert not torch.allclose(model(x), student_before)
    runs = teacher_backend.runs
    after = teacher(x)
    assert teacher_backend.runs > runs
    torch.testing.assert_close(after.preds, before.preds)
    for got, want in zip(after.towers, before.towers):
        torch.testing.assert_close(got, want)


# ------------------------------------------------------------------------- a whole run
class Recorder(pl.Callback):
    """What every fit looks like from outside: the compiled modules while training, graph runs
    during validation, the keys of the checkpoints written while compiled."""

    def __init__(self, backends):
        self.backends = backends  # id(model) -> CountingBackend
        self.models, self.teachers, self.compiled = [], [], []
        self.validation_runs = 0
        self.checkpoint_keys = []

    def runs(self):
        return sum(b.runs + b.graphs for b in self.backends.values())

    def on_train_start(self, trainer, module):
        teacher = module.method.teacher
        self.models.append(module.model)
        self.teachers.append(teacher)
        self.compiled.append((compiled_modules(module.model),
                              compiled_modules(teacher.model) if teacher is not None else None))

    def on_validation_start(self, trainer, module):
        self._before = self.runs()

    def on_validation_end(self, trainer, module):
        self.validation_runs += self.runs() - self._before

    def on_save_checkpoint(self, trainer, module, checkpoint):
        self.checkpoint_keys.append(list(checkpoint["state_dict"]))


def test_a_compiled_two_task_run(tmp_path, monkeypatch):
    backends, modes = {}, []
    real = compiling.compile_detector

    def counting_compile(model, mode, backend="inductor", dynamic=False):
        modes.append(mode)
        return real(model, mode, backend=backends.setdefault(id(model), CountingBackend()), dynamic=dynamic)

    monkeypatch.setattr(compiling, "compile_detector", counting_compile)
    cfg = fixtures_continual.tiny_cfg(tmp_path / "data", extra=["device.compile=true", "schedule.val_intervals=1"])
    recorder = Recorder(backends)
    runner = ContinualRunner(cfg, parse_scenario(TWO_TASKS, cfg.class_names), build_method("ld"),
                             run_dir=tmp_path / "run", seed=7, progress_bar=False, callbacks=[recorder],
                             handover="best")  # validation during the fit, then the best checkpoint loaded
    results = runner.run()

    assert results["finished"] and len(results["per_task"]) == 2
    model = recorder.models[0]
    assert recorder.models[1] is model
    # Task 0 compiles the student; task 1 the student again and the teacher (neck and head: LD's
    # teacher shares the student's backbone).
    assert modes == ["default"] * 3
    teacher = recorder.teachers[1]
    assert recorder.compiled[0][1] is None and recorder.compiled[0][0] == recorder.compiled[1][0]
    assert_blocks_cover(model, recorder.compiled[1][0])
    assert_blocks_cover(teacher.model, recorder.compiled[1][1], parts=("fpn", "head"))
    assert teacher.model is not model and teacher.model.backbone is None
    assert backends[id(model)].runs > 0 and backends[id(teacher.model)].runs > 0  # training went through them
    assert recorder.validation_runs == 0  # validation ran eagerly (sanity check and every epoch)
    # Everything written while compiled has upstream's keys; nothing stays compiled after the run.
    plain = list(build_model(cfg.model).state_dict())
    assert recorder.checkpoint_keys and all(keys == ["model." + k for k in plain] for keys in recorder.checkpoint_keys)
    for t in (0, 1):
        assert list(read_checkpoint(tmp_path / "run" / f"task_{t}" / "model.pth")["state_dict"]) == plain
    assert compiled_modules(model) == [] and compiled_modules(teacher.model) == []
