"""Streaming evaluation without TensorFlow: smoothing results into detections, scoring them
against ground truth (accuracy, false accepts per hour, false-reject rate, threshold sweeps) and
generating long test streams with their ground truth."""

from __future__ import annotations

from kws_core.streaming.generate import generate_stream, write_stream
from kws_core.streaming.recognize import (
    Detection,
    RecognizeCommands,
    RecognizeResult,
    SmoothedScores,
    check_decoder_settings,
    detect,
    recognize_settings,
    recognize_stream,
    smooth_scores,
)
from kws_core.streaming.score import (
    MatchEvent,
    StreamingStats,
    ThresholdChoice,
    read_ground_truth,
    score_detections,
    sweep_thresholds,
    threshold_for_target,
    write_ground_truth,
)

__all__ = [
    "Detection",
    "MatchEvent",
    "RecognizeCommands",
    "RecognizeResult",
    "SmoothedScores",
    "StreamingStats",
    "ThresholdChoice",
    "check_decoder_settings",
    "detect",
    "generate_stream",
    "read_ground_truth",
    "recognize_settings",
    "recognize_stream",
    "score_detections",
    "smooth_scores",
    "sweep_thresholds",
    "threshold_for_target",
    "write_ground_truth",
    "write_stream",
]
