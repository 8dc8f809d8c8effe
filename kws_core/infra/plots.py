"""Pictures people look at: confusion matrices (PNG), rendered with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from kws_core.infra.atomic import atomic_path  # noqa: E402


def _save(fig, path: Path, dpi: int = 100) -> Path:
    """Write a figure as PNG atomically (temp file, then rename) and free it."""
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """Counts [true label, predicted label]."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(truth, int), np.asarray(pred, int)), 1)
    return cm


def confusion_table(cm: np.ndarray, labels: list[str]) -> pd.DataFrame:
    return pd.DataFrame(cm, index=pd.Index(labels, name="true"), columns=labels)


def format_confusion(cm: np.ndarray, labels: list[str]) -> str:
    """The tutorial's printed confusion matrix, with label names on both axes."""
    return confusion_table(cm, labels).to_string()


def plot_confusion(cm: np.ndarray, labels: list[str], path: Path, title: str = "") -> Path:
    """Heat map of row-normalised rates with the counts written in each cell."""
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.55 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title} accuracy {100 * acc:.1f}% (N={cm.sum()})".strip())
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm[i, j]:
                color = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true label")
    return _save(fig, path, dpi=110)


def plot_spectrogram(
    times: np.ndarray,
    freqs: np.ndarray,
    db: np.ndarray,
    features: np.ndarray,
    feature_name: str,
    path: Path,
    title: str = "",
) -> Path:
    """Two panels: the power spectrogram (dB) and the model's features, time left to right."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7))
    vmax = float(db.max())
    im = top.pcolormesh(times, freqs, db, shading="auto", cmap="magma", vmin=vmax - 80, vmax=vmax)
    top.set_title(f"{title}: spectrogram".strip(": "))
    top.set_xlabel("time (s)")
    top.set_ylabel("frequency (Hz)")
    fig.colorbar(im, ax=top, label="power (dB)")
    frames, bins = features.shape
    # Percentile limits: mfcc's c0 would otherwise wash out every other coefficient.
    lo, hi = np.percentile(features, [2, 98])
    im2 = bottom.imshow(features.T, origin="lower", aspect="auto", cmap="viridis", vmin=lo, vmax=hi)
    bottom.set_title(f"what the model sees: {feature_name} ({frames} frames x {bins} bins)")
    bottom.set_xlabel("frame (window stride)")
    bottom.set_ylabel("coefficient" if feature_name == "mfcc" else "bin")
    fig.colorbar(im2, ax=bottom, label=feature_name)
    return _save(fig, path, dpi=100)


def plot_det_curve(
    curve: pd.DataFrame,
    path: Path,
    operating: float | None = None,
    target_fa_per_hour: float | None = None,
    title: str = "",
) -> Path:
    """False-reject rate against false accepts per hour, one point per detection threshold.

    `curve` needs columns threshold, false_accepts_per_hour, false_reject_rate (0..1). The
    configured threshold (`operating`) is marked; `target_fa_per_hour` is a dashed line.
    """
    fig, ax = plt.subplots(figsize=(7, 5))
    fa = curve["false_accepts_per_hour"].to_numpy()
    frr = 100 * curve["false_reject_rate"].to_numpy()
    ax.plot(fa, frr, "o-", ms=3, label="detection threshold sweep")
    for row in curve.iloc[:: max(len(curve) // 8, 1)].itertuples():
        ax.annotate(
            f"{row.threshold:.2f}",
            (row.false_accepts_per_hour, 100 * row.false_reject_rate),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    if operating is not None:
        at = curve.iloc[int(np.argmin(np.abs(curve["threshold"].to_numpy() - operating)))]
        ax.plot(
            [at.false_accepts_per_hour],
            [100 * at.false_reject_rate],
            "r*",
            ms=14,
            label=f"configured threshold {operating:g}",
        )
    if target_fa_per_hour is not None:
        ax.axvline(
            target_fa_per_hour, color="grey", ls="--", label=f"target {target_fa_per_hour:g} FA/h"
        )
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlim(left=0)
    ax.set_xlabel("false accepts per hour (negative-only stream)")
    ax.set_ylabel("false-reject rate (%)")
    ax.set_title(title or "streaming DET curve")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, dpi=100)
