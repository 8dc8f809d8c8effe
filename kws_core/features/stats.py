"""Per-bin statistics of feature batches (what the model's FeatureNormalization is set from)."""

from __future__ import annotations

import numpy as np


def feature_stats(batches) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per bin over batches of [batch, time, bins] features."""
    total, total_sq, count = 0.0, 0.0, 0
    for x in batches:
        x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
        total = total + x.sum(axis=0)
        total_sq = total_sq + (x**2).sum(axis=0)
        count += x.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)
