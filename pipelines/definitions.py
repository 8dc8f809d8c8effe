"""Dagster entry point (`dagster dev -w workspace.yaml`, or `make ui`)."""

import dagster as dg

from pipelines.asset_checks import manifest_expectations, model_accuracy, streaming_thresholds
from pipelines.assets.data import partition_manifest, raw_dataset
from pipelines.assets.export import frozen_graph
from pipelines.assets.features import augmented_features
from pipelines.assets.streaming import streaming_eval_report, test_streams
from pipelines.assets.training import trained_model
from pipelines.jobs import data_job, kws_pipeline
from pipelines.resources import KwsParams
from pipelines.schedules import weekly_retrain
from pipelines.sensors import new_data_sensor

all_assets = [
    raw_dataset,
    partition_manifest,
    augmented_features,
    trained_model,
    frozen_graph,
    test_streams,
    streaming_eval_report,
]
all_checks = [manifest_expectations, model_accuracy, streaming_thresholds]

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[kws_pipeline, data_job],
    schedules=[weekly_retrain],
    sensors=[new_data_sensor],
    resources={"kws": KwsParams()},
)
