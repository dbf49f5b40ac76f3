"""Conversions between boxes and point-to-edge distances, and warping boxes by a 3x3 matrix.

These live in ``util`` because both the data pipeline (augmenting ground truth) and the
detection head (mapping detections back to the original image) need them, and the model
must not import the data layer.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def distance2bbox(points: torch.Tensor, distance: torch.Tensor,
                  max_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Boxes ``[..., 4]`` (x1, y1, x2, y2) from points ``[..., 2]`` and their distances
    ``[..., 4]`` to the left, top, right and bottom edges.

    ``max_shape`` is ``(height, width)``; when given, every coordinate is clamped into it.
    """
    x1 = points[..., 0] - distance[..., 0]
    y1 = points[..., 1] - distance[..., 1]
    x2 = points[..., 0] + distance[..., 2]
    y2 = points[..., 1] + distance[..., 3]
    if max_shape is not None:
        height, width = max_shape[0], max_shape[1]
        x1 = x1.clamp(min=0, max=width)
        y1 = y1.clamp(min=0, max=height)
        x2 = x2.clamp(min=0, max=width)
        y2 = y2.clamp(min=0, max=height)
    return torch.stack([x1, y1, x2, y2], -1)


def bbox2distance(points: torch.Tensor, bbox: torch.Tensor, max_dis: float | None = None,
                  eps: float = 0.1) -> torch.Tensor:
    """Distances ``[..., 4]`` (left, top, right, bottom) from points ``[..., 2]`` to the edges
    of boxes ``[..., 4]``; the inverse of :func:`distance2bbox`.

    With ``max_dis`` every distance is clamped into ``[0, max_dis - eps]``: the distribution
    targets must stay strictly below the last bin so that the bin to their right exists.
    """
    left = points[..., 0] - bbox[..., 0]
    top = points[..., 1] - bbox[..., 1]
    right = bbox[..., 2] - points[..., 0]
    bottom = bbox[..., 3] - points[..., 1]
    if max_dis is not None:
        left = left.clamp(min=0, max=max_dis - eps)
        top = top.clamp(min=0, max=max_dis - eps)
        right = right.clamp(min=0, max=max_dis - eps)
        bottom = bottom.clamp(min=0, max=max_dis - eps)
    return torch.stack([left, top, right, bottom], -1)


def warp_boxes(boxes: np.ndarray | Sequence[Sequence[float]], M: np.ndarray, width: float | np.ndarray,
               height: float | np.ndarray) -> np.ndarray:
    """Apply the 3x3 perspective matrix ``M`` to ``[N, 4]`` xyxy boxes (numpy).

    Each box's four corners are transformed, the axis-aligned box around them is kept, and
    it is clipped to ``[0, width] x [0, height]``. ``M`` may also be ``[N, 3, 3]`` and ``width``,
    ``height`` ``[N]``: one per box (a whole dataset's detections mapped back at once). Returns
    float32; an empty input is returned as it is.
    """
    n = len(boxes)
    if n == 0:
        return boxes
    boxes = np.asarray(boxes)
    # Corners in homogeneous coordinates: (x1, y1), (x2, y2), (x1, y2), (x2, y1).
    corners = np.ones((n, 4, 3))
    corners[:, :, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n, 4, 2)
    M = np.asarray(M, dtype=np.float64)
    corners = corners @ (M.T if M.ndim == 2 else M.transpose(0, 2, 1))
    xy = corners[..., :2] / corners[..., 2:3]
    warped = np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)
    warped[:, [0, 2]] = warped[:, [0, 2]].clip(0, np.reshape(width, (-1, 1)))
    warped[:, [1, 3]] = warped[:, [1, 3]].clip(0, np.reshape(height, (-1, 1)))
    return warped.astype(np.float32)
