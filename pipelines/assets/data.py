"""Data assets: the raw data set and the partition manifest; each calls kws_core.steps."""

import dagster as dg

from kws_core.data.manifest import label_counts, origin_counts
from kws_core.steps import dataset_step, manifest_step
from pipelines.metadata import result, table
from pipelines.resources import KwsParams

GROUP = "data"


@dg.asset(group_name=GROUP, description="Clips in the Speech Commands layout (data_url source).")
def raw_dataset(context: dg.AssetExecutionContext, kws: KwsParams) -> dg.MaterializeResult:
    params = kws.load()
    raw = dataset_step(params, progress=kws.progress)
    return result(
        {
            "data_dir": dg.MetadataValue.path(str(raw.data_dir)),
            "source": raw.source,
            "clips": raw.n_files,
            "reused": raw.reused,
        },
        kws.commit("dataset"),
    )


@dg.asset(
    group_name=GROUP,
    deps=[raw_dataset],
    description="One row per clip with label, speaker and partition (which_set), as Parquet.",
)
def partition_manifest(context: dg.AssetExecutionContext, kws: KwsParams) -> dg.MaterializeResult:
    params = kws.load()
    out = manifest_step(params, progress=kws.progress)
    res = out.result
    return result(
        {
            "path": dg.MetadataValue.path(str(out.paths["manifest"])),
            "dagster/row_count": len(res.manifest),
            "clips_per_label_and_partition": table(label_counts(res.manifest)),
            "rejected_files": len(res.rejected),
            "rejected": dg.MetadataValue.md(
                res.rejected.head(50).to_markdown(index=False) if len(res.rejected) else "none"
            ),
            "list_disagreements": len(res.disagreements),
            "clips_per_source": table(origin_counts(res.manifest)),
            "synthetic_quality_gate": dg.MetadataValue.md(
                res.synth_quality.to_markdown(index=False)
                if res.synth_quality is not None
                else "not a synthetic data set"
            ),
        },
        kws.commit("manifest"),
    )
