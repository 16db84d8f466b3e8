"""One coreference run: SciREX file -> backend -> canonical result file, plus a summary."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dore.coref.backends import make_backend, resolve
from dore.coref.importers import file_sha256
from dore.coref.io import write_result
from dore.coref.quality import coref_quality
from dore.data.scirex import read_scirex


def run_coref(backend: str, input_path: str | os.PathLike, out_path: str | os.PathLike,
              import_path: str | os.PathLike | None = None) -> dict:
    """Resolve coreference in a SciREX jsonl file and write the result to `out_path`.

    `backend` is one of `dore.coref.backends.BACKENDS`; the importers read `import_path`. The file
    records the input's sha256 (not its path), so it is byte-identical across runs and checkouts.
    Returns a summary: backend, setting, counts, the coreference quality against the file's gold
    salient clusters (`dore.coref.quality.coref_quality`) and the backend's run time in seconds.
    """
    input_path = Path(input_path)
    docs, _ = read_scirex(input_path)
    coref_backend = make_backend(backend, import_path)
    started = time.perf_counter()
    result = resolve(coref_backend, docs, provenance={"input_file": input_path.name,
                                                      "input_sha256": file_sha256(input_path)})
    seconds = time.perf_counter() - started
    write_result(out_path, result)
    quality = coref_quality(docs, result)
    clusters = [c for d in result.docs for c in d.clusters]
    return {"backend": result.backend, "setting": result.setting, "output": str(out_path), "docs": len(result.docs),
            "clusters": len(clusters), "mentions": sum(map(len, clusters)),
            "singletons": sum(len(c) == 1 for c in clusters),
            "untyped_clusters": sum(t is None for d in result.docs for t in d.types),
            "quality": {"muc_f1": quality["muc"]["f1"], "b3_f1": quality["b3"]["f1"],
                        "ceafe_f1": quality["ceafe"]["f1"], "avg_f1": quality["avg_f1"]},
            "report": result.provenance.get("report", {}), "seconds": seconds}
