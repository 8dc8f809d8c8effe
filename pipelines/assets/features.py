"""The augmented feature cache training reads (keyed by the feature and augmentation params)."""

import dagster as dg

from kws_core.steps import features_step
from pipelines.assets.data import partition_manifest
from pipelines.metadata import result
from pipelines.resources import KwsParams


@dg.asset(
    group_name="features",
    deps=[partition_manifest],
    description="Augmented training features and clean validation/test features, float16 shards.",
)
def augmented_features(context: dg.AssetExecutionContext, kws: KwsParams) -> dg.MaterializeResult:
    cache = features_step(kws.load(), progress=kws.progress)
    meta = cache.meta
    return result(
        {
            "path": dg.MetadataValue.path(str(cache.path)),
            "key": cache.key,
            "reused": cache.reused,
            "examples": dg.MetadataValue.json(meta.get("counts", {})),
            "shape": str(meta.get("shape", "")),
        },
        kws.commit("features"),
    )
