"""The GPU's ceiling for a NanoDet-Plus training step: the whole step in one CUDA graph.

    python tools/step_ceiling.py cfg/synthetic.yml --batch-size 64 256 --json ceiling.json
    nanodet-step-ceiling cfg/synthetic.yml ...   # the same, from any directory, after pip install -e .

For each batch size and each network (``full``: every parameter trains; ``ld_student``: the
backbone frozen in eval mode under no_grad, only neck and head train, as Latent Distillation's
student), the forward, a loss, the backward, gradient clipping and AdamW are captured as one CUDA
graph (``CapturedTrainingStep``, the same object training uses) and replayed on one fixed batch,
timed with CUDA events. Losses:

* ``trivial``: the mean of the head's output, no label assignment: what the network alone costs,
  the ceiling a method's step is compared with;
* ``detection``: NanoDet-Plus' loss with the batched assigner on fixed random boxes, the step of
  naive fine-tuning without data loading.

No data loading, no Lightning: those are in tools/benchmark.py, whose img/s over this ceiling is
each method's share of it. Needs CUDA (``--device cuda:N`` picks the GPU; of a list, the first).

The step's settings are the config's, as training reads them, changed with ``--set``:
``device.precision`` (auto: bf16 autocast; 32: fp32; fp16 is refused, the captured step has no
loss scaler), ``device.channels_last``, ``device.compile`` (a torch.compile mode for the network
inside the graph), ``device.compile_dynamic`` (one graph per block class for all its sizes) and
``device.cudnn_benchmark`` (cuDNN's algorithm search for each new shape).
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable, Sequence

import torch

from nanodet.model.arch import build_model
from nanodet.trainer import compile as compiling
from nanodet.trainer.builders import inference_device, on_this_device, resolve_precision
from nanodet.trainer.captured_step import CapturedTrainingStep, capturable_optimizer_options, lr_as_tensors
from nanodet.util import CfgNode
from nanodet.util.cli import (add_config_arg, add_config_override_arg, add_device_arg, config_from_args, parse_args,
                              run_main)
from nanodet.util.config import compile_mode
from nanodet.util.io import atomic_write_json

# The Lightning precision of device.precision -> the step's autocast name here.
PRECISION_NAMES = {"bf16-mixed": "bf16", "32-true": "32"}


def random_batch(batch_size: int, height: int, width: int, num_classes: int, boxes_per_image: int,
                 device: torch.device, channels_last: bool, generator: torch.Generator) -> dict[str, torch.Tensor]:
    img = torch.randn(batch_size, 3, height, width, generator=generator).to(device)
    if channels_last:
        img = img.contiguous(memory_format=torch.channels_last)
    xy = torch.rand(batch_size, boxes_per_image, 2, generator=generator) * torch.tensor([width * 0.7, height * 0.7])
    spread = torch.tensor([width * 0.3, height * 0.3])
    wh = 16 + torch.rand(batch_size, boxes_per_image, 2, generator=generator) * spread
    return {"img": img,
            "gt_bboxes_padded": torch.cat([xy, xy + wh], -1).to(device),
            "gt_labels_padded": torch.randint(num_classes, (batch_size, boxes_per_image),
                                              generator=generator).to(device),
            "gt_valid": torch.ones(batch_size, boxes_per_image, dtype=torch.bool, device=device)}


def make_loss(model: torch.nn.Module, network: str,
              loss: str) -> Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    frozen = network == "ld_student"

    def compute_loss(batch):
        with torch.set_grad_enabled(not frozen):
            features = model.backbone(batch["img"])
        preds = model.head(model.fpn(features))
        if loss == "trivial":
            value = preds.float().mean()
            return value, {"loss": value}
        return model.head.loss(preds, batch)

    return compute_loss


def profile_steps(compute_loss: Callable, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                  clip_norm: float | None, canvas: tuple[int, int], batch: dict[str, torch.Tensor], steps: int,
                  top: int = 30) -> dict[str, Any]:
    """The same step run eagerly under torch.profiler: GPU time per step by operator and kernel
    (what a graph replay spends its time on; launch costs excluded)."""
    eager = CapturedTrainingStep(compute_loss, optimizer, params, clip_norm, canvas=canvas, use_graphs=False)
    eager(batch)
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(steps):
            eager(batch)
        torch.cuda.synchronize()
    events = profiler.key_averages()
    # The profiler books the optimizer's step() range (a user annotation) as device time too: not a
    # kernel, and counting it would double the optimizer's share (seen on an H200).
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA
               and not e.key.startswith("Optimizer.")]
    total_us = sum(e.self_device_time_total for e in kernels) / steps

    def rows(items):
        ranked = sorted(items, key=lambda e: e.self_device_time_total, reverse=True)[:top]
        return [{"name": e.key[:120], "us_per_step": round(e.self_device_time_total / steps, 1),
                 "calls_per_step": e.count / steps,
                 "share": round(e.self_device_time_total / steps / max(total_us, 1e-9), 4)} for e in ranked]

    operators = [e for e in events if e.device_type != torch.autograd.DeviceType.CUDA and e.key.startswith("aten::")]
    return {"kernel_ms_per_step": round(total_us / 1000, 3),
            "kernels_per_step": sum(e.count for e in kernels) / steps,
            "kernels": rows(kernels), "operators": rows(operators)}


def measure(cfg: CfgNode, network: str, loss: str, batch_size: int, args: argparse.Namespace,
            device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device).train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if network == "ld_student":
        model.backbone.eval().requires_grad_(False)
    parts = compiling.compile_detector(model, args.compile, dynamic=cfg.device.compile_dynamic) if args.compile else []
    params = [p for p in model.parameters() if p.requires_grad]
    # As training builds it for a captured step (capturable, fused).
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05,
                                  **capturable_optimizer_options(torch.optim.AdamW))
    lr_as_tensors(optimizer, device)
    width, height = cfg.data.train.input_size
    step = CapturedTrainingStep(make_loss(model, network, loss), optimizer, params, cfg.grad_clip,
                                canvas=(height, width))
    batch = random_batch(batch_size, height, width, cfg.model.arch.head.num_classes, args.boxes, device,
                         args.channels_last, torch.Generator().manual_seed(1))
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    started = time.perf_counter()
    with torch.autocast("cuda", dtype=dtype, enabled=args.precision == "bf16"):
        for _ in range(5):  # eager steps (cuDNN's search, compilation), the capture, a few replays
            step(batch)
        torch.cuda.synchronize()
        setup_seconds = time.perf_counter() - started
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(args.repeats):
            start.record()
            for _ in range(args.replays):
                step(batch)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / args.replays)
        profile = profile_steps(make_loss(model, network, loss), optimizer, params, cfg.grad_clip, (height, width),
                                batch, args.profile) if args.profile else None
    compiling.restore(parts)
    median = sorted(times)[len(times) // 2]
    extra = {"profile": profile} if profile else {}
    return {**extra, "network": network, "loss": loss, "batch": batch_size, "precision": args.precision,
            "cudnn_benchmark": args.cudnn_benchmark, "benchmark_limit": torch.backends.cudnn.benchmark_limit,
            "setup_seconds": round(setup_seconds, 2),
            "channels_last": args.channels_last, "compile": args.compile or False,
            "compile_dynamic": bool(args.compile and cfg.device.compile_dynamic),
            "graphs": step.captures, "step_ms": median, "img_per_s": batch_size / median * 1000,
            "trainable_parameters": sum(p.numel() for p in params)}


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arg(parser, example="cfg/synthetic.yml")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[64, 256],
                        help="the batch sizes to measure, one after the other (default 64 256)")
    parser.add_argument("--network", nargs="+", default=["full", "ld_student"], choices=("full", "ld_student"))
    parser.add_argument("--loss", nargs="+", default=["trivial", "detection"], choices=("trivial", "detection"))
    parser.add_argument("--boxes", type=int, default=8, help="ground-truth boxes per image (detection loss)")
    parser.add_argument("--replays", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--benchmark-limit", type=int, default=None,
                        help="torch.backends.cudnn.benchmark_limit: algorithms cuDNN's search tries per shape")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="also profile this many eager steps: GPU time by operator and kernel")
    parser.add_argument("--json", default=None)
    add_device_arg(parser, default="cuda", one_device=True)
    add_config_override_arg(parser)
    args = parse_args(parser, argv)
    cfg = config_from_args(args.config, args)
    if not torch.cuda.is_available():
        raise SystemExit("tools/step_ceiling.py measures CUDA graphs: it needs a CUDA device")
    device = inference_device(args.device or "cuda")
    if device.type != "cuda":
        raise SystemExit(f"error: --device {args.device}: tools/step_ceiling.py measures CUDA graphs on a GPU")
    torch.cuda.set_device(device)  # CUDA events, synchronisation and the device's name: this GPU
    precision = resolve_precision(cfg.device.precision, "gpu")
    if precision not in PRECISION_NAMES:
        raise SystemExit(f"error: device.precision {cfg.device.precision}: the captured step measures bf16 or 32 "
                         "(fp16 would need a loss scaler)")
    # The step's settings, read from the config as training reads them.
    args.precision = PRECISION_NAMES[precision]
    args.channels_last = on_this_device(cfg.device.channels_last, device)
    args.compile = compile_mode(cfg.device.compile)
    args.cudnn_benchmark = cfg.device.cudnn_benchmark
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if args.benchmark_limit is not None:
        torch.backends.cudnn.benchmark_limit = args.benchmark_limit
    results = []
    print("| network | loss | batch | precision | channels_last | compile | cudnn search | set-up s | step ms "
          "| img/s |")
    for batch_size in args.batch_size:
        for network in args.network:
            for loss in args.loss:
                result = measure(cfg, network, loss, batch_size, args, device)
                results.append(result)
                print(f"| {network} | {loss} | {batch_size} | {args.precision} | {args.channels_last} | "
                      f"{result['compile']} | {args.cudnn_benchmark} | {result['setup_seconds']:.1f} | "
                      f"{result['step_ms']:.2f} | {result['img_per_s']:,.0f} |", flush=True)
                if args.json:
                    atomic_write_json(args.json, {"device": torch.cuda.get_device_name(), "results": results})
    return results


def cli() -> None:
    """The command ``nanodet-step-ceiling``: ``main`` with a user's mistake in one line."""
    run_main(main)


if __name__ == "__main__":
    cli()
