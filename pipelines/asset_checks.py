"""Asset checks: the Great Expectations suite on the manifest."""

import dagster as dg

from kws_core.steps import validate_step
from pipelines.assets.data import partition_manifest
from pipelines.resources import KwsParams


@dg.asset_check(asset=partition_manifest, blocking=True, description="Great Expectations suite")
def manifest_expectations(kws: KwsParams) -> dg.AssetCheckResult:
    report = validate_step(kws.load())
    return dg.AssetCheckResult(
        passed=report.success,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "summary": dg.MetadataValue.md("\n".join(f"- {x}" for x in report.summary_lines())),
            "expectations": len(report.outcomes),
            "failed": len(report.failures),
            "data_docs": dg.MetadataValue.path(str(report.docs_path / "index.html")),
        },
    )
