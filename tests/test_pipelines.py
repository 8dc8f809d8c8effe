"""The Dagster layer: assets materialize in-process on a real (ephemeral) instance."""

import dagster as dg
import yaml

from pipelines.asset_checks import manifest_expectations
from pipelines.assets.data import partition_manifest, raw_dataset
from pipelines.definitions import defs
from pipelines.resources import KwsParams


def test_definitions_load_and_string_selection_works():
    # A string selection fails with the antlr version dvc pulls in; the pins keep it working.
    job = defs.resolve_job_def("data_job")
    assert {n.name for n in job.nodes} >= {"raw_dataset", "partition_manifest"}


def test_materialize_data_assets_with_check(tiny_dataset, tmp_path):
    tiny_dataset(speakers=100)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"data_url": "", "data_dir": "data"}}))
    result = dg.materialize(
        [raw_dataset, partition_manifest, manifest_expectations],
        resources={"kws": KwsParams(params_path=str(params), overrides={"wanted_words": "yes,no"})},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    mats = {
        m.asset_key.to_user_string(): m.metadata
        for m in (
            e.event_specific_data.materialization for e in result.get_asset_materialization_events()
        )
    }
    assert mats["raw_dataset"]["source"].value == "local"
    assert mats["partition_manifest"]["dagster/row_count"].value > 200
    assert "yes" in mats["partition_manifest"]["clips_per_label_and_partition"].value
    checks = result.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [True]
    assert (tmp_path / "results/manifest/manifest.parquet").exists()
