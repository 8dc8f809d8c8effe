"""Jobs: the whole pipeline and the data part alone."""

import dagster as dg

kws_pipeline = dg.define_asset_job(
    "kws_pipeline",
    selection=dg.AssetSelection.all(),
    description="Data set to streaming report: every asset and check.",
)
data_job = dg.define_asset_job(
    "data_job", selection="key:raw_dataset or key:partition_manifest", description="Data only."
)
