"""The `augmented_features` stage: augmented training features computed once, streamed from disk.

`build_feature_cache` writes `<features.cache_dir>/<key[:16]>/` in one rename (atomic_dir):

* `training.npy` / `training_labels.npy`: `cache_copies` augmented copies of every training row,
  copy-major (row c * N + i is copy c of training row i). Copy c of row i is the tutorial's
  augmentation (time shift, background noise, silence cut from noise) with stateless randomness
  keyed by (seed, copy), so a rebuild gives the same numbers whatever the chunking.
* `validation.npy` / `testing.npy` (+ labels): the clean features `AudioProcessor.features` gives.
* `norm_stats.npz`: per-bin mean / std over the training cache (the FeatureNormalization layer).
* `meta.json`: key, shapes, dtype, counts per label and partition, the inputs, seconds taken.

The folder name is a hash of everything that decides those numbers (`cache_key`): the front end,
augmentation, copies, seed, labels, the manifest's clips and the background-noise files. The
architecture and the optimiser are not in it, so every architecture trains from one cache.
Training samples rows of the memory-mapped `training.npy` with stateless randomness keyed by
(seed, step) (`CacheBatches`), so a resumed run sees exactly the batches of an uninterrupted one
and memory stays bounded however large the cache is.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kws_core.config import Params
from kws_core.data.labels import prepare_words_list
from kws_core.features.background import background_files, noise_dirs
from kws_core.features.front_end import FeatureSpec
from kws_core.infra.atomic import atomic_dir
from kws_core.infra.errors import DataError

# Bump when the augmentation or the file layout changes in a way the key cannot see.
CACHE_FORMAT = 2  # 2: training_weights.npy (data.sources weights)
KEEP = 2  # cache folders kept in cache_dir (the most recently built or used)
CHUNK = 256  # clips augmented and featurised at once while building (bounds the build's RAM)
PARTITIONS = ("training", "validation", "testing")
_FOLDER = re.compile(r"^[0-9a-f]{16}$")
_LEFTOVER = re.compile(r"^\.[0-9a-f]{16}\..+\.(tmp|old)$")  # of a build killed by SIGKILL
STALE_S = 24 * 3600
_FILES = (
    "training.npy",
    "training_labels.npy",
    "training_weights.npy",
    "validation.npy",
    "validation_labels.npy",
    "testing.npy",
    "testing_labels.npy",
    "norm_stats.npz",
    "meta.json",
)


def feature_dtype(spec: FeatureSpec) -> str:
    """Storage dtype of the cached features.

    float16 halves the disk and the page cache the training run streams through. Its rounding
    (2**-11, ~5e-4 relative) is far below the augmentation noise and the per-bin spread the
    model normalises by: mfcc coefficient 0 near -250 is off by at most 0.125 against a spread
    of tens. `average` is a *linear* power spectrogram whose quiet bins fall below float16's
    normal range (6e-5) and whose loudest approach its maximum (65504), so it is kept float32.
    """
    return "float32" if spec.preprocess == "average" else "float16"


def _manifest_digest(manifest: pd.DataFrame) -> str:
    names = [c for c in ("path", "label", "partition", "sha1", "weight") if c in manifest]
    cols = manifest[names].astype(str)
    return hashlib.sha256(cols.to_csv(index=False).encode()).hexdigest()


def _background_digest(data_dir: Path, extra_dirs: list[Path]) -> dict[str, str]:
    """sha1 of every background-noise file: silence and noise mixing are cut from them."""
    out = {}
    for path in background_files(data_dir):
        out[path.name] = hashlib.sha1(path.read_bytes()).hexdigest()
    for i, folder in enumerate(extra_dirs):  # by content and order, not by where they are
        for path in sorted(folder.glob("*.wav")):
            out[f"noise_dirs[{i}]/{path.name}"] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


def _key_inputs(params: Params, manifest: pd.DataFrame, data_dir: Path | None) -> dict:
    spec = FeatureSpec.from_params(params)
    data_dir = params.layout.data_dir if data_dir is None else Path(data_dir)
    return {
        "format": CACHE_FORMAT,
        "features": spec.to_dict(),
        "dtype": feature_dtype(spec),
        # noise_dirs counts by the files' content (background_sha1), not by their paths
        "augment": params.augment.model_dump(mode="json", exclude={"noise_dirs"}),
        "cache_copies": params.features.cache_copies,
        "seed": params.train.seed,
        "labels": prepare_words_list(params.data.wanted_word_list),
        "manifest_sha256": _manifest_digest(manifest),
        "background_sha1": _background_digest(data_dir, noise_dirs(params)),
    }


def _digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def cache_key(params: Params, manifest: pd.DataFrame, data_dir: Path | None = None) -> str:
    """sha256 of everything that decides the cached numbers (not the architecture or schedule).

    `data_dir` (default: the configured data.data_dir) is where the background noise is read.
    """
    return _digest(_key_inputs(params, manifest, data_dir))


def cache_root(params: Params) -> Path:
    return params.layout.cache_dir


@dataclass
class FeatureCache:
    """A complete cache folder with its arrays memory-mapped (nothing is read until used)."""

    path: Path
    key: str
    meta: dict
    reused: bool
    training: np.ndarray
    training_labels: np.ndarray
    training_weights: np.ndarray  # sampling weight of each training row (data.sources)
    validation: np.ndarray
    validation_labels: np.ndarray
    testing: np.ndarray
    testing_labels: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files.values())

    @property
    def norm_stats(self) -> tuple[np.ndarray, np.ndarray]:
        return self.mean, self.std

    def clips(self) -> dict[str, int]:
        """Source clips per partition (training: before the copies)."""
        return {p: int(self.meta["clips"][p]) for p in PARTITIONS}

    def batches(
        self, batch_size: int, first_step: int, last_step: int, seed: int, prefetch: int = 3
    ) -> CacheBatches:
        return CacheBatches(self, batch_size, first_step, last_step, seed, prefetch)


def _open(path: Path, key: str, reused: bool) -> FeatureCache | None:
    try:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("key") != key or any(not (path / f).is_file() for f in _FILES):
            return None
        arrays = {
            name: np.load(path / f"{name}.npy", mmap_mode="r")
            for name in (f"{p}{s}" for p in PARTITIONS for s in ("", "_labels"))
        }
        arrays["training_weights"] = np.load(path / "training_weights.npy")
        with np.load(path / "norm_stats.npz") as stats:
            mean, std = stats["mean"].copy(), stats["std"].copy()
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None
    for p in PARTITIONS:
        x, y = arrays[p], arrays[f"{p}_labels"]
        if list(x.shape) != meta["shapes"][p] or x.shape[0] != y.shape[0]:
            return None
    if arrays["training_weights"].shape != arrays["training_labels"].shape:
        return None
    return FeatureCache(
        path=path,
        key=key,
        meta=meta,
        reused=reused,
        mean=mean,
        std=std,
        files={f: path / f for f in _FILES},
        **arrays,
    )


def open_feature_cache(
    params: Params, manifest: pd.DataFrame, data_dir: Path | None = None
) -> FeatureCache | None:
    """The complete cache for these params and this manifest, or None (missing or incomplete)."""
    key = cache_key(params, manifest, data_dir)
    return _open(cache_root(params) / key[:16], key, reused=True)


def prune_caches(root: Path, keep: int = KEEP, current: Path | None = None) -> list[Path]:
    """Delete all but the `keep` most recently built or used cache folders; returns the deleted.

    Only `<16 hex>` folders are considered; temp folders are removed only when a day old (a
    build in progress is left alone).
    """
    if not root.is_dir():
        return []
    for p in root.iterdir():
        if _LEFTOVER.match(p.name) and p.is_dir() and time.time() - p.stat().st_mtime > STALE_S:
            shutil.rmtree(p, ignore_errors=True)
    folders = [p for p in root.iterdir() if p.is_dir() and _FOLDER.match(p.name)]
    folders.sort(key=lambda p: (p == current, p.stat().st_mtime), reverse=True)
    gone = folders[keep:]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def build_feature_cache(
    params: Params, manifest: pd.DataFrame, data_dir: Path, progress: bool = True
) -> FeatureCache:
    """Build (or reuse, `reused=True`) the augmented feature cache of these params and data."""
    from tqdm import tqdm

    from kws_core.features.augmented_audio import AudioProcessor
    from kws_core.features.front_end import compute_features

    data_dir = Path(data_dir)
    inputs = _key_inputs(params, manifest, data_dir)
    key = _digest(inputs)
    root = cache_root(params)
    target = root / key[:16]
    found = _open(target, key, reused=True)
    if found is not None:
        os.utime(target)  # "recently used" for prune_caches
        return found

    t0 = time.perf_counter()
    spec = FeatureSpec.from_params(params)
    labels = inputs["labels"]
    dtype = np.dtype(inputs["dtype"])
    copies = params.features.cache_copies
    processor = AudioProcessor.from_params(
        params, manifest, data_dir, labels, spec, progress=progress
    )
    n = len(processor.sets["training"])
    h, w = spec.shape
    with atomic_dir(target) as tmp:
        x = np.lib.format.open_memmap(
            tmp / "training.npy", mode="w+", dtype=dtype, shape=(copies * n, h, w)
        )
        # Reserve the blocks now: writing into a sparse memory map on a full disk is SIGBUS (a
        # crash), while fallocate fails cleanly with ENOSPC (a one-line error via atomic_dir).
        with open(tmp / "training.npy", "r+b") as fh:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        y = np.zeros(copies * n, np.int32)
        total = np.zeros(w, np.float64)
        total_sq = np.zeros(w, np.float64)
        bar = tqdm(total=copies * n, desc="augmented features", unit="clip", disable=not progress)
        try:
            for c in range(copies):
                for s in range(0, n, CHUNK):
                    idx = np.arange(s, min(s + CHUNK, n))
                    audio, lab = processor.augmented_rows(idx, c)
                    f = compute_features(audio, spec).numpy().astype(dtype)
                    _check_finite(f, spec)
                    x[c * n + s : c * n + s + len(idx)] = f
                    y[c * n + s : c * n + s + len(idx)] = lab.numpy()
                    # Statistics of the stored numbers: what the model will be fed.
                    flat = f.reshape(-1, w).astype(np.float64)
                    total += flat.sum(axis=0)
                    total_sq += (flat**2).sum(axis=0)
                    bar.update(len(idx))
        finally:
            bar.close()
        x.flush()
        del x
        np.save(tmp / "training_labels.npy", y)
        np.save(tmp / "training_weights.npy", np.tile(processor.sets["training"].weights, copies))
        count = copies * n * h
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        np.savez(tmp / "norm_stats.npz", mean=mean.astype(np.float32), std=std.astype(np.float32))
        shapes = {"training": [copies * n, h, w]}
        for part in ("validation", "testing"):
            f, lab = _clean_features(processor, part, dtype)
            np.save(tmp / f"{part}.npy", f)
            np.save(tmp / f"{part}_labels.npy", lab)
            shapes[part] = list(f.shape)
        sets = processor.sets
        meta = {
            "key": key,
            "format": CACHE_FORMAT,
            "dtype": dtype.name,
            "shape": [h, w],  # one example: frames x bins
            "shapes": shapes,
            "copies": copies,
            "clips": {p: len(sets[p]) for p in PARTITIONS},
            "counts": {
                p: {label: int(np.sum(sets[p].labels == i)) for i, label in enumerate(labels)}
                for p in PARTITIONS
            },
            "inputs": inputs,
            "seconds": round(time.perf_counter() - t0, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    del processor
    prune_caches(root, KEEP, current=target)
    cache = _open(target, key, reused=False)
    if cache is None:  # another process replaced or pruned it in between
        raise DataError(f"feature cache {target} vanished right after it was built; run again")
    return cache


def _clean_features(processor, partition: str, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """`processor.features(partition)` (same 1000-clip batches), no float copy of all audio."""
    from kws_core.features.augmented_audio import features_of

    data = processor.sets[partition]
    h, w = processor.spec.shape
    out = np.zeros((len(data), h, w), dtype=dtype)
    for i in range(0, len(data), 1000):
        chunk = data.audio[i : i + 1000].astype(np.float32) / 32768.0
        out[i : i + 1000] = features_of(chunk, processor.spec, 1000).astype(dtype)
    _check_finite(out, processor.spec)
    return out, data.labels.copy()


def _check_finite(f: np.ndarray, spec: FeatureSpec) -> None:
    if not np.all(np.isfinite(f)):
        raise DataError(
            f"feature cache: {spec.preprocess} features overflow {f.dtype.name}; "
            "report this with the data set (features.preprocess)"
        )


def batch_indices(
    seed: int, step: int, batch_size: int, rows: int, cdf: np.ndarray | None = None
) -> np.ndarray:
    """Rows of the training cache used at `step`: stateless, a function of (seed, step) only.

    With `cdf` (cumulative row weights ending at 1), rows are drawn in proportion to weight.
    """
    digest = hashlib.sha256(f"{seed}|cache-batch|{step}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    if cdf is None:
        return rng.integers(0, rows, batch_size)
    return np.minimum(np.searchsorted(cdf, rng.random(batch_size), side="right"), rows - 1)


def weights_cdf(weights: np.ndarray) -> np.ndarray | None:
    """Cumulative sampling distribution of row weights; None when all weights are equal."""
    w = np.asarray(weights, np.float64)
    if w.size == 0 or np.all(w == w[0]):
        return None
    cdf = np.cumsum(w)
    return cdf / cdf[-1]


_END = object()


class CacheBatches:
    """Iterator of (features float32, labels int32) for steps first..last, read ahead by a thread.

    A background thread gathers the rows of the next `prefetch` steps from the memory-mapped
    cache while the current step trains; at most `prefetch` batches are held in memory.
    `close()` (or leaving a `with` block) stops the thread.
    """

    def __init__(
        self,
        cache: FeatureCache,
        batch_size: int,
        first_step: int,
        last_step: int,
        seed: int,
        prefetch: int = 3,
    ) -> None:
        self.cache, self.batch_size, self.seed = cache, batch_size, seed
        self.steps = range(first_step, last_step + 1)
        self._cdf = weights_cdf(cache.training_weights)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        _advise_random(cache.training)
        self._thread = threading.Thread(target=self._work, name="kws-cache-batches", daemon=True)
        self._thread.start()

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.cache.training, self.cache.training_labels
        idx = batch_indices(self.seed, step, self.batch_size, len(y), self._cdf)
        order = np.argsort(idx, kind="stable")  # read the file front to back
        out = np.empty((len(idx), *x.shape[1:]), np.float32)
        out[order] = x[idx[order]]
        return out, np.asarray(y[idx], np.int32)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for step in self.steps:
                if not self._put(self.batch(step)):
                    return
            self._put(_END)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> CacheBatches:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _advise_random(x: np.ndarray) -> None:
    """Tell the kernel the training cache is read at random (no useless read-ahead)."""
    m = getattr(x, "_mmap", None)
    if m is not None and hasattr(mmap, "MADV_RANDOM"):
        try:
            m.madvise(mmap.MADV_RANDOM)
        except (OSError, ValueError):
            pass
