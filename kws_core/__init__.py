"""kws core: data, features, models, training, export, inference and streaming, no Dagster."""

import os

# TensorFlow enables its oneDNN kernels by default only on some Intel CPUs. Everywhere else
# (this project's AMD EPYC CI machines) they are 4x faster for tiny_conv's strided
# convolution, ~1.9x for conv and ~1.4x for the front end (bench/train_speed.py,
# BENCHMARKS.md). Set before TensorFlow is first imported; TF_ENABLE_ONEDNN_OPTS=0 opts out.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
