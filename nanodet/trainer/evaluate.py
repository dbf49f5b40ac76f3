"""Evaluation outside Lightning: run a detector over a dataset and score it with an evaluator.

Used by tools/test.py and the continual-learning runner, where a plain loop is simpler and
cheaper than a Trainer.
"""

from __future__ import annotations

import torch

from .builders import build_dataloader


def _to_device(batch: dict, device: torch.device) -> dict:
    batch = dict(batch)
    batch["img"] = batch["img"].to(device, non_blocking=True)
    return batch


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, dataset, cfg, device: torch.device | str = "cpu",
                    batch_size: int | None = None, num_workers: int | None = None) -> dict:
    """Detections of ``model`` on every image of ``dataset`` in upstream's results format."""
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    results = {}
    loader = build_dataloader(dataset, cfg, train=False, batch_size=batch_size, num_workers=num_workers)
    try:
        for batch in loader:
            batch = _to_device(batch, device)
            results.update(model.head.post_process(model(batch["img"]), batch))
    finally:
        model.train(was_training)
    return results


def evaluate_model(model, dataset, evaluator, cfg, device="cpu", class_ids=None, save_dir=None,
                   batch_size=None, num_workers=None) -> dict:
    results = predict_dataset(model, dataset, cfg, device, batch_size, num_workers)
    return evaluator.evaluate(results, save_dir=save_dir, class_ids=class_ids)
