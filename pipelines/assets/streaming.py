"""Streaming evaluation: test streams (independent of the model) and the report."""

import dagster as dg

from kws_core.steps import stream_eval_step, streams_step
from pipelines.assets.data import partition_manifest
from pipelines.assets.export import frozen_graph
from pipelines.metadata import image, number, result
from pipelines.resources import KwsParams


@dg.asset(
    group_name="streaming",
    deps=[partition_manifest],
    description="A keyword stream and a negative-only stream from the test partition, with "
    "ground truth (stream_duration_s, negative_duration_s).",
)
def test_streams(context: dg.AssetExecutionContext, kws: KwsParams) -> dg.MaterializeResult:
    files = streams_step(kws.load())
    return result(
        {
            name: dg.MetadataValue.path(str(f.wav))
            for name, f in (("keyword_stream", files[0]), ("negative_stream", files[1]))
        }
        | {"reused": all(f.reused for f in files)},
        kws.commit("streams"),
    )


@dg.asset(
    group_name="streaming",
    deps=[frozen_graph, test_streams],
    description="Tutorial streaming accuracy, false accepts per hour, false-reject rate, DET "
    "curve; logged to the training run in MLflow.",
)
def streaming_eval_report(
    context: dg.AssetExecutionContext, kws: KwsParams
) -> dg.MaterializeResult:
    report = stream_eval_step(kws.load(), progress=kws.progress)
    r = report.report
    pos, neg = r["keyword_stream"], r["negative_stream"]
    return result(
        {
            # the picture is the det_curve entry (the report's relative link would be broken)
            "report": dg.MetadataValue.md(
                report.files["report_md"].read_text().replace("![DET curve](det_curve.png)", "")
            ),
            "det_curve": image(report.files["det_png"], "DET curve"),
            "correct_pct": number(pos["correct_pct"]),
            "false_reject_rate": number(pos["false_reject_rate"] or 0.0),
            "false_accepts_per_hour": number(neg["false_accepts_per_hour"]),
            "threshold_for_target": r["target"]["threshold"] if r["target"]["threshold"] else -1,
            "real_time_factor": number(r["real_time_factor"]),
            "path": dg.MetadataValue.path(str(report.files["report_json"])),
        },
        kws.commit("stream_eval"),
    )
