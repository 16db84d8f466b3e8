"""Prefect flow `extract-dore`: relations for a corpus, its shards extracted in parallel on Dask.

The corpus (DocRED files or dore JSON lines) is cut into shards (`dore.batch.write_shards`);
`extract_shard` is mapped over them with prefect-dask's `DaskTaskRunner`: a `LocalCluster` on
127.0.0.1 by default (`workers` processes, one torch thread each), or the Dask scheduler at
`$DORE_DASK_ADDRESS` (e.g. `tcp://scheduler:8786`; set it where the flow runs, the code is the
same). Each shard's result is written atomically and keyed by the model's fingerprint: a rerun
skips what is done. A shard that fails (a corrupt line, a document the model cannot take) fails
alone, its error naming the file and the document; the flow then ends Failed, listing them, after
the others finished. The merged result equals `dore predict` on the same documents.

    python flows/extract.py MODEL_DIR CORPUS... --out DIR           # one local run (ephemeral API)
    prefect deployment run extract-dore/corpus --watch -p model_dir=... -p 'inputs=[...]' -p out_dir=...
"""

from __future__ import annotations

import os
from pathlib import Path

from dore.env import set_offline_defaults

set_offline_defaults()  # before Prefect and Dask read their settings

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.futures import wait  # noqa: E402
from prefect_dask import DaskTaskRunner  # noqa: E402

from dore import batch  # noqa: E402

WORKERS = int(os.environ.get("DORE_DASK_WORKERS", "2"))


def task_runner() -> DaskTaskRunner:
    """The user's scheduler when `$DORE_DASK_ADDRESS` names one, else a local cluster bound to
    127.0.0.1 (nothing listens beyond this machine)."""
    if address := os.environ.get("DORE_DASK_ADDRESS"):
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": WORKERS, "threads_per_worker": 1, "processes": True,
                                          "host": "127.0.0.1", "dashboard_address": None,
                                          "env": {"OMP_NUM_THREADS": "1"}})


@task(name="extract-shard", retries=0)
def extract_shard(model_dir: str, shard: str, fingerprint: str) -> dict:
    """One shard -> its result file (skipped when this model's result exists)."""
    return batch.extract_shard(model_dir, shard, fingerprint)


@flow(name="extract-dore", task_runner=task_runner(), persist_result=False)
def extract_dore(model_dir: str, inputs: list[str], out_dir: str, shard_docs: int = 50) -> dict:
    """Shard the corpus, extract every shard on Dask, merge into `<out_dir>/relations.jsonl`."""
    logger = get_run_logger()
    fingerprint = batch.model_fingerprint(model_dir)
    shards = batch.write_shards(inputs, out_dir, shard_docs)
    logger.info("%d shards of at most %d documents; model %s", len(shards), shard_docs, fingerprint)
    futures = [extract_shard.submit(model_dir, str(shard), fingerprint) for shard in shards]
    wait(futures)
    done, failed = [], []
    for shard, future in zip(shards, futures):
        state = future.state
        if state.is_completed():
            done.append(future.result())
        else:
            failed.append(f"{shard.name}: {state.message}")
    skipped = sum(r["skipped"] for r in done)
    logger.info("%d shards extracted, %d skipped (already done), %d failed", len(done) - skipped, skipped, len(failed))
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(shards)} shards failed (the others are saved; rerun to retry "
                           "only these): " + "; ".join(failed))
    merged = batch.merge([r["output"] for r in done], Path(out_dir) / "relations.jsonl")
    return {"shards": len(shards), "skipped": skipped, "fingerprint": fingerprint, "output": str(merged),
            "documents": sum(r.get("documents", 0) for r in done)}


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=extract_dore.description)
    parser.add_argument("model_dir")
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--out", required=True, help="folder for shards/, results/ and relations.jsonl")
    parser.add_argument("--shard-docs", type=int, default=50)
    args = parser.parse_args()
    print(json.dumps(extract_dore(args.model_dir, args.inputs, args.out, args.shard_docs), indent=1))
