"""Dagster entry point (`dagster dev -w workspace.yaml`)."""

import dagster as dg

from pipelines.asset_checks import manifest_expectations
from pipelines.assets.data import partition_manifest, raw_dataset
from pipelines.resources import KwsParams

all_assets = [raw_dataset, partition_manifest]

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=[manifest_expectations],
    jobs=[dg.define_asset_job("data_job", selection="raw_dataset+")],
    resources={"kws": KwsParams()},
)
