"""Measure the training step (data, forward, assignment + loss, backward, optimizer) in img/s.

    python tools/benchmark.py --cfg cfg/synthetic.yml --method plain --batch-size 256 --steps 50 \\
        --precision bf16 --channels-last --reference

Runs on CUDA when present, else on the CPU (use small numbers there, e.g. ``--batch-size 4
--steps 3``). Two paths, in the same process:

* **fast** (always): images decoded once into a uint8 cache on the device, augmented per batch by
  ``GpuBatchAugment``; labels assigned by the batched assigner (``batched_assign=True``).
* **reference** (``--reference``): upstream's way, the CPU pipeline in DataLoader workers and the
  per-image assigner.

``--method ld`` emulates Latent Distillation's step: the backbone frozen (eval mode, no gradients,
run under ``no_grad``) and shared, the student neck+head trained, a frozen copy of neck+head run
under ``no_grad`` as the teacher, and the MSE of the class logits and of the head towers added to
the loss. ``plain`` trains everything (and the aux head when the config has one).

The data is the synthetic benchmark, generated into ``--data`` (the config's spec, or a smaller
one with ``--train-images``). Phase times come from CUDA events recorded between the phases (the
only synchronisation is at the end of the run); on the CPU from the wall clock. Prints one
markdown table row per path, and with ``--reference`` the speed-up.
"""

import argparse
import contextlib
import copy
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nanodet.data.collate import collate_and_pad  # noqa: E402
from nanodet.data.dataset import SyntheticDataset  # noqa: E402
from nanodet.data.gpu_augment import DecodedImageCache, GpuBatchAugment, GpuBatchLoader  # noqa: E402
from nanodet.data.synthetic import SYNTHETIC_CLASSES, SyntheticSpec, ensure_generated  # noqa: E402
from nanodet.model.arch import build_model  # noqa: E402
from nanodet.trainer.task import build_optimizer  # noqa: E402
from nanodet.util.cli import add_config_override_arg, config_from_args  # noqa: E402

PHASES = ("data", "forward", "assign_loss", "backward", "optimizer")
HEADER = ("| path | method | batch | precision | channels_last | img/s | data ms | forward ms "
          "| assign+loss ms | backward ms | optimizer ms | peak GPU GB | device |")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="config file, e.g. cfg/synthetic.yml")
    parser.add_argument("--method", choices=("plain", "ld"), default="plain")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="measured steps")
    parser.add_argument("--warmup", type=int, default=None,
                        help="unmeasured steps first (default: min(5, steps); at least 1)")
    parser.add_argument("--precision", choices=("bf16", "32"), default="32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--reference", action="store_true",
                        help="also run upstream's path (CPU pipeline DataLoader + per-image assigner)")
    parser.add_argument("--data", default=None, help="folder of the synthetic set (default: the config's root)")
    parser.add_argument("--train-images", type=int, default=None, help="a smaller set than the config's")
    parser.add_argument("--input-size", type=int, default=None, help="square input size instead of the config's")
    parser.add_argument("--workers", type=int, default=None, help="reference DataLoader workers (default: config)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    add_config_override_arg(parser)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- setup
def synthetic_dataset(cfg, args):
    """The config's train node as a ``SyntheticDataset`` in ``--data`` (generated if missing)."""
    node = dict(cfg.data.train)
    spec_args = dict(node.get("synthetic") or {})
    if args.train_images is not None:
        spec_args.update(train=args.train_images, test=min(spec_args.get("test", 1), max(1, args.train_images // 4)))
    known = {f.name for f in fields(SyntheticSpec)}
    spec = SyntheticSpec(**{k: v for k, v in spec_args.items() if k in known})
    root = Path(args.data or node.get("root") or "data/benchmark")
    ensure_generated(root, spec)
    num_classes = cfg.model.arch.head.num_classes
    input_size = [args.input_size] * 2 if args.input_size else list(node["input_size"])
    return SyntheticDataset(root=str(root), input_size=input_size, pipeline=dict(node["pipeline"]),
                            split="trainval", synthetic=spec_args, keep_ratio=node.get("keep_ratio", True),
                            mode="train", class_names=list(SYNTHETIC_CLASSES[:num_classes]))


class Step:
    """One training step of a method, split into the benchmark's phases."""

    def __init__(self, cfg, method, batched_assign, device, channels_last, precision):
        model_cfg = copy.deepcopy(cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model))
        model_cfg["arch"]["head"]["batched_assign"] = batched_assign
        self.model = build_model(model_cfg).to(device).train()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.method = method
        self.teacher = None
        if method == "ld":
            self.model.backbone.eval().requires_grad_(False)
            self.teacher = torch.nn.ModuleDict({"fpn": copy.deepcopy(self.model.fpn),
                                                "head": copy.deepcopy(self.model.head)})
            self.teacher.eval().requires_grad_(False)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(cfg.schedule.optimizer, self.params)
        self.grad_clip = cfg.get("grad_clip") or 0
        self.device = device
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                         else contextlib.nullcontext())

    def forward(self, img):
        model = self.model
        with self.autocast:
            if self.method == "ld":
                with torch.no_grad():
                    feats = model.backbone(img)
                    t_preds, t_towers = self.teacher["head"].forward_with_towers(self.teacher["fpn"](feats))
                preds, towers = model.head.forward_with_towers(model.fpn(feats))
                return preds, None, (t_preds, t_towers, towers)
            if getattr(model, "aux_head", None) is None:
                return model(img), None, None
            feat = model.backbone(img)  # NanoDetPlus.forward_train's AGM, split from its loss
            fpn_feat = model.fpn(feat)
            detached = model.epoch >= model.detach_epoch
            aux_in = [f.detach() for f in feat] if detached else feat
            aux_fpn_feat = model.aux_fpn(aux_in)
            dual = [torch.cat([f.detach() if detached else f, a], dim=1) for f, a in zip(fpn_feat, aux_fpn_feat)]
            return model.head(fpn_feat), model.aux_head(dual), None

    def loss(self, outputs, batch):
        preds, aux_preds, distill = outputs
        with self.autocast:
            loss, _ = self.model.head.loss(preds, batch, aux_preds=aux_preds)
            if distill is not None:  # LD: MSE of the class logits and of every tower
                t_preds, t_towers, towers = distill
                num_classes = self.model.head.num_classes
                loss = loss + F.mse_loss(preds[..., :num_classes].float(), t_preds[..., :num_classes].float())
                loss = loss + sum(F.mse_loss(s.float(), t.float()) for s, t in zip(towers, t_towers))
        return loss

    def optimize(self):
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def fast_batches(dataset, pipeline_cfg, args, device):
    cache = DecodedImageCache(dataset, device=device)
    augment = GpuBatchAugment(pipeline_cfg, dataset.input_size, keep_ratio=dataset.keep_ratio,
                              device=device, channels_last=args.channels_last)
    loader = GpuBatchLoader(cache, augment, args.batch_size, shuffle=True, drop_last=True, seed=args.seed)
    while True:
        yield from loader


def reference_batches(dataset, args, device, workers):
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0, drop_last=True,
        collate_fn=collate_and_pad,
    )
    while True:
        for batch in loader:
            img = batch["img"].to(device, non_blocking=True)
            if args.channels_last:
                img = img.contiguous(memory_format=torch.channels_last)
            batch["img"] = img
            yield batch


# --------------------------------------------------------------------------- timing
class PhaseClock:
    """Marks between phases: CUDA events (no synchronisation until ``read``) or wall time."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.marks = []

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def read(self):
        """Milliseconds between consecutive marks."""
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:])]
        return [1000 * (b - a) for a, b in zip(self.marks, self.marks[1:])]


def run_path(name, step, batches, args, device):
    # At least one unmeasured step: it builds the image cache or starts the DataLoader workers.
    warmup = max(1, args.warmup if args.warmup is not None else min(5, args.steps))
    for _ in range(warmup):
        run_one(step, next(batches), None)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    clock = PhaseClock(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        clock.mark()
        batch = next(batches)
        run_one(step, batch, clock)
    clock.mark()
    durations = clock.read()  # synchronises
    elapsed = time.perf_counter() - start
    per_phase = {p: sum(durations[i::len(PHASES)]) / args.steps for i, p in enumerate(PHASES)}
    return {
        "path": name, "method": args.method, "batch": args.batch_size, "precision": args.precision,
        "channels_last": args.channels_last, "img_per_s": args.batch_size * args.steps / elapsed,
        "ms": per_phase,
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }


def run_one(step, batch, clock):
    """Forward, loss, backward, optimizer; ``clock`` marks the end of each phase."""
    mark = clock.mark if clock is not None else (lambda: None)
    mark()  # end of data
    outputs = step.forward(batch["img"])
    mark()
    loss = step.loss(outputs, batch)
    mark()
    loss.backward()
    mark()
    step.optimize()


def row(result):
    ms = result["ms"]
    peak = "-" if result["peak_gpu_gb"] is None else f"{result['peak_gpu_gb']:.2f}"
    return (f"| {result['path']} | {result['method']} | {result['batch']} | {result['precision']} "
            f"| {'yes' if result['channels_last'] else 'no'} | {result['img_per_s']:,.0f} "
            + " ".join(f"| {ms[p]:.1f}" for p in PHASES) + f" | {peak} | {result['device']} |")


def main(argv=None):
    args = parse_args(argv)
    cfg = config_from_args(args.cfg, args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(args.seed)
    dataset = synthetic_dataset(cfg, args)
    if len(dataset) < args.batch_size:
        raise SystemExit(f"--batch-size {args.batch_size} is larger than the {len(dataset)} training images")

    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    results = []
    step = Step(cfg, args.method, True, device, args.channels_last, args.precision)
    batches = fast_batches(dataset, dict(cfg.data.train.pipeline), args, device)
    results.append(run_path("fast", step, batches, args, device))
    print(row(results[-1]), flush=True)
    del step, batches  # free the image cache before the reference run
    if args.reference:
        workers = cfg.device.workers_per_gpu if args.workers is None else args.workers
        step = Step(cfg, args.method, False, device, args.channels_last, args.precision)
        results.append(run_path("reference", step, reference_batches(dataset, args, device, workers),
                                args, device))
        print(row(results[-1]), flush=True)
        print(f"\nspeed-up fast / reference: {results[0]['img_per_s'] / results[1]['img_per_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
