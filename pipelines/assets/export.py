"""Frozen graphs: the champion as SavedModel, TFLite float and TFLite int8 (`kws freeze`)."""

import dagster as dg

from kws_core.steps import freeze_step
from pipelines.assets.training import trained_model
from pipelines.metadata import result
from pipelines.resources import KwsParams


@dg.asset(
    group_name="model",
    deps=[trained_model],
    description="SavedModel + TFLite float/int8 with the front end inside, labels, export.json.",
)
def frozen_graph(context: dg.AssetExecutionContext, kws: KwsParams) -> dg.MaterializeResult:
    exported = freeze_step(kws.load(), progress=kws.progress)
    sizes = "\n".join(f"| {name} | {size / 1e6:.2f} MB |" for name, size in exported.sizes.items())
    return result(
        {
            "path": dg.MetadataValue.path(str(exported.out_dir)),
            "model_sizes": dg.MetadataValue.md("| file | size |\n| --- | ---: |\n" + sizes),
            **{f"{name.split('.')[0]}_bytes": size for name, size in exported.sizes.items()},
            "checkpoint": str(exported.checkpoint),
            **_registered(exported.registered),
        },
        kws.commit("freeze"),
    )


def _registered(reg) -> dict:
    """Where MLflow registered the export (nothing when its training run was not tracked)."""
    if reg is None:
        return {}
    return {"mlflow_model": reg.model_uri, "mlflow_champion": reg.champion}
