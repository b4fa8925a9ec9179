"""Many scenes on a Dask distributed cluster.

::

    from distributed import Client
    import nimbus.dask

    client = Client("tcp://scheduler:8786")          # or Client() for a local cluster
    outcomes = nimbus.dask.improve_cloud_masks(["a.SAFE", ("b.tif", "b_pm.tif")], "/shared/masks",
                                               client=client, cloud_model="/shared/cloud_model2_cpu.onnx")

One task per scene. Outputs go to ``out_dir``/<id>.tif with a record of their sha256;
each is written under a temporary name and renamed when complete, and a scene whose
output already verifies is skipped. So a worker that dies mid-scene loses nothing (the
scheduler reruns the scene elsewhere) and duplicates nothing (one final name per
scene), and rerunning the call after an interruption only does the missing scenes.
``out_dir``, the inputs and the models must be reachable under the same paths from
every worker (a shared file system), and every worker needs ``import nimbus``.
Each worker process loads each model once, on its first task, and its later tasks reuse
it (Nimbus' process-wide model cache; a model file replaced on disk is loaded again).
"""
__all__ = ["improve_cloud_masks"]

import os
import uuid

import nimbus
from nimbus import _nimbus


def _process_scene(scene, out_dir, options, stac_items=False):
    # Runs on a worker. Bad input comes back as a 'failed' outcome; only internal
    # errors raise (and are retried).
    return nimbus.process_batch_scene(scene, out_dir, options, stac_items)


def improve_cloud_masks(scenes, out_dir, client=None, threads_per_scene=1, retries=1, stac_items=False, **options):
    """Submits one task per scene and waits for all of them.

    scenes: paths (SAFE products, or rasters with ``product_mask`` derived from SAFE only),
        (s2_raster, product_mask) pairs, dicts with s2_raster/product_mask/id, or a manifest CSV.
    out_dir: directory shared with the workers.
    client: a ``distributed.Client``; default: the current one (``distributed.get_client()``).
    threads_per_scene: inference threads each task uses; with one Dask thread per core
        per worker, 1 avoids oversubscribing the cores.
    stac_items: also write a STAC Item per mask (<id>.json) and their ItemCollection
        (items.geojson), as :func:`nimbus.batch` does.
    options: as for :func:`nimbus.improve_cloud_mask` (models, thresholds, ...).

    Returns one outcome dict per scene, in input order: id, status ('done', 'skipped',
    'failed'), output, sha256, error, seconds.
    """
    if client is None:
        from distributed import get_client
        client = get_client()
    scenes = nimbus.normalise_scenes(scenes)
    out_dir = os.path.abspath(os.fsdecode(out_dir))
    # Every output location is checked against every input before any task is submitted.
    _nimbus.check_batch_outputs(scenes, out_dir, options, stac_items)
    os.makedirs(out_dir, exist_ok=True)
    options = dict(options)
    options.setdefault("threads", threads_per_scene)
    # Scenes whose STAC item is broken fail here, once, and are not submitted.
    errors = dict(zip((s["id"] for s in scenes), _nimbus.check_batch_items(scenes)))
    runnable = [s for s in scenes if not errors[s["id"]]]
    run = uuid.uuid4().hex[:8]
    futures = client.map(_process_scene, runnable, out_dir=out_dir, options=options, stac_items=stac_items,
                         pure=False, retries=retries, key=[f"nimbus-scene-{s['id']}-{run}" for s in runnable])
    try:
        ran = dict(zip((s["id"] for s in runnable), client.gather(futures)))
    finally:
        client.cancel(futures)
    # Every task has finished: hidden partial files left by killed workers are garbage.
    _nimbus.remove_stale_partials(scenes, out_dir, False)
    outcomes = [ran[s["id"]] if s["id"] in ran else _nimbus.failed_scene(s, out_dir, errors[s["id"]]) for s in scenes]
    if stac_items:
        _nimbus.write_batch_item_collection([o["stac_item"] for o in outcomes if o["stac_item"]], out_dir)
    return outcomes
