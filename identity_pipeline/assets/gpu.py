"""The one place that says "this asset needs a GPU", for every executor we may run on.

* ``pool="gpu"``: Dagster's concurrency pool; dagster.yaml limits it to one step per instance, so
  two GPU steps never share a card on a single machine.
* ``dagster-k8s/config``: the k8s run/step launchers request one ``nvidia.com/gpu``.
* ``dagster-celery/queue``: the Celery executor routes the step to workers listening on "gpu".

Use ``@gpu_asset(...)`` instead of ``@dg.asset(...)``, or splat ``**GPU_ASSET_KWARGS``.
"""

from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

GPU_POOL = "gpu"
GPU_CELERY_QUEUE = "gpu"

GPU_OP_TAGS: dict[str, Any] = {
    "dagster-k8s/config": {
        "container_config": {
            "resources": {
                "limits": {"nvidia.com/gpu": "1"},
                "requests": {"nvidia.com/gpu": "1"},
            }
        }
    },
    "dagster-celery/queue": GPU_CELERY_QUEUE,
}

GPU_ASSET_KWARGS: dict[str, Any] = {"pool": GPU_POOL, "op_tags": GPU_OP_TAGS}


def gpu_asset(**kwargs: Any) -> Callable[..., dg.AssetsDefinition]:
    """``dg.asset`` with the GPU pool and tags; extra ``op_tags`` are merged, not replaced."""
    extra_tags: Mapping[str, Any] = kwargs.pop("op_tags", None) or {}
    return dg.asset(pool=GPU_POOL, op_tags={**GPU_OP_TAGS, **extra_tags}, **kwargs)
