"""Load benchmark of the BentoML service: `/extract` latency and throughput under concurrent
clients, with and without adaptive batching.

    python bench/bench_service.py                 # the packaged model in $BENTOML_HOME (dore-docred:latest)
    python bench/bench_service.py --tiny          # a random tiny-bart model in a temporary store (smoke run)
    python bench/bench_service.py --url http://127.0.0.1:3000   # a running server, as it is configured

Without `--url` it starts `bentoml serve service:DoreService` once per mode (`DORE_BATCHING=on`,
then `off`), warms it up, and sends `--requests` requests from `--clients` closed-loop clients,
each request one Re-DocRED test document in token form (the first `--docs` documents that fit
the model, in turn). Writes bench/results/service.md and service.json: p50/p95/p99 latency,
requests/s, errors by status, and the mean batch size the dispatcher ran (from /metrics).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from dore.env import set_offline_defaults  # noqa: E402

set_offline_defaults()


def token_request(doc) -> dict:
    starts = [start for start, _ in doc.sentences]
    return {"id": doc.doc_id, "tokens": [doc.tokens[s:e] for s, e in doc.sentences],
            "entities": [{"type": ent.type, "mentions": [
                {"sent": m.sent_id, "start": m.start - starts[m.sent_id], "end": m.end - starts[m.sent_id]}
                for m in ent.mentions]} for ent in doc.entities]}


def build_tiny_store(home: Path) -> str:
    """A random tiny-bart model with the DocRED layout, packaged as dore-docred in `home`."""
    os.environ["BENTOML_HOME"] = str(home)  # before bentoml is imported
    from dore.data.datasets import data_root
    from dore.data.docred import load_rel_info
    from dore.extract import Extractor
    from dore.model.backbone import load_backbone
    from dore.stages import package_model as package
    from dore.symbolic.layout import docred_layout

    layout = docred_layout(load_rel_info(data_root() / "docred" / "rel_info.json"))
    model_dir = Extractor(load_backbone("tiny-bart", layout), layout).save_pretrained(home / "tiny-model")
    return package(model_dir, "dore-docred")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(batching: bool, model: str, torch_threads: int | None, log: Path):
    """`bentoml serve` in its own process group on a free port; stopped (group SIGTERM) on exit."""
    port = free_port()
    env = {**os.environ, "DORE_BATCHING": "on" if batching else "off", "DORE_BENTO_MODEL": model,
           "BENTOML_DO_NOT_TRACK": "true"}
    if torch_threads:
        env["OMP_NUM_THREADS"] = str(torch_threads)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "service:DoreService", "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server not ready; log:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def batch_counters(http: httpx.Client) -> tuple[float, float]:
    """(documents, batches) run by the /extract_batch dispatcher so far; (0, 0) without batching."""
    text = http.get("/metrics").text
    out = []
    for kind in ("sum", "count"):
        match = re.search(rf'^bentoml_service_adaptive_batch_size_{kind}{{[^}}]*method_name="extract_batch"[^}}]*}} (\S+)',
                          text, re.MULTILINE)
        out.append(float(match.group(1)) if match else 0.0)
    return out[0], out[1]


def latency_ms(seconds: list[float]) -> dict | None:
    if len(seconds) < 2:
        return None
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")  # cuts[q - 1]: the q-th percentile
    return {"p50": 1e3 * cuts[49], "p95": 1e3 * cuts[94], "p99": 1e3 * cuts[98], "mean": 1e3 * statistics.fmean(seconds)}


def load(url: str, payloads: list[dict], clients: int, requests: int, warmup: int, duration: float | None = None) -> dict:
    """Closed loop: `clients` threads keep `clients` requests in flight until `requests` are
    answered, or, with `duration`, until that many seconds have passed."""
    with httpx.Client(base_url=url, timeout=300, limits=httpx.Limits(max_connections=clients + 4)) as http:
        info = http.get("/model").json()

        def send(i: int) -> tuple[int, float]:
            start = time.perf_counter()
            status = http.post("/extract", json={"documents": [payloads[i % len(payloads)]]}).status_code
            return status, time.perf_counter() - start

        with ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(send, range(warmup)))  # also trains the dispatcher's latency model
            docs_before, batches_before = batch_counters(http)
            start = time.perf_counter()
            if duration is None:
                results = list(pool.map(send, range(requests)))
            else:
                def client(k: int) -> list[tuple[int, float]]:
                    mine, i = [], k
                    while time.perf_counter() - start < duration:
                        mine.append(send(i))
                        i += clients
                    return mine

                results = [r for mine in pool.map(client, range(clients)) for r in mine]
            wall = time.perf_counter() - start
        docs_after, batches_after = batch_counters(http)
    ok = [latency for status, latency in results if status == 200]
    batches = batches_after - batches_before
    return {"model": info["model"], "adaptive_batching": info["adaptive_batching"], "requests": len(results),
            "clients": clients, "ok": len(ok), "errors": dict(Counter(str(s) for s, _ in results if s != 200)),
            "wall_s": wall, "requests_per_s": len(ok) / wall, "latency_ms": latency_ms(ok),
            "mean_batch_size": (docs_after - docs_before) / batches if batches else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="benchmark this running server instead of starting one per mode")
    ap.add_argument("--tiny", action="store_true", help="serve a random tiny-bart model from a temporary store")
    ap.add_argument("--model", default=os.environ.get("DORE_BENTO_MODEL", "dore-docred:latest"))
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--duration", type=float, help="seconds of load per mode (instead of --requests)")
    ap.add_argument("--name", default="service", help="result files: <out>/<name>.json and .md")
    ap.add_argument("--docs", type=int, default=20, help="distinct Re-DocRED test documents to cycle through")
    ap.add_argument("--modes", default="on,off", help="adaptive batching modes to run, in order")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="OMP_NUM_THREADS of the server; 0: torch's default (all cores). Threads that share cores "
                         "with the clients contend, so 1 unless the server has cores of its own")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args()

    from dore.data.datasets import data_root
    from dore.data.docred import read_docred

    docs = read_docred(data_root() / "redocred" / "test_revised.json")[0]

    def payloads_for(url: str) -> list[dict]:
        slots = httpx.get(f"{url}/model", timeout=10).json()["entity_slots"]
        return [token_request(d) for d in docs if len(d.entities) <= slots][: args.docs]

    runs = []
    with tempfile.TemporaryDirectory(prefix="dore-bench-service-") as scratch:
        if args.url:
            runs.append(load(args.url, payloads_for(args.url), args.clients, args.requests, args.warmup, args.duration))
        else:
            model = build_tiny_store(Path(scratch) / "bentoml") if args.tiny else args.model
            for mode in args.modes.split(","):
                with serve(mode == "on", model, args.torch_threads, Path(scratch) / f"serve-{mode}.log") as url:
                    runs.append(load(url, payloads_for(url), args.clients, args.requests, args.warmup, args.duration))

    source = "random tiny-bart, DocRED layout (--tiny)" if args.tiny else args.url or args.model
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    results = {"runs": runs, "model_source": source, "documents": args.docs, "cpus": os.cpu_count(), "torch_threads": args.torch_threads,
               "revision": revision, "duration_s": args.duration,
               "python": platform.python_version(), "machine": platform.machine(),
               "note": "clients and server share this machine"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    load_text = f"{args.duration:.0f} s" if args.duration else f"{args.requests} requests"
    lines = [f"# Service benchmark: POST /extract, {args.clients} concurrent clients, {load_text} per mode (code {revision})",
             "", f"Model `{runs[0]['model']}` ({source}); one Re-DocRED test document per request ({args.docs} distinct, token form); "
             f"{os.cpu_count()} CPUs shared by clients and server; server torch threads: "
             f"{args.torch_threads or 'torch default'}.", "",
             "| adaptive batching | requests/s | p50 ms | p95 ms | p99 ms | mean batch | errors |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        lat, batch = r["latency_ms"] or {}, r["mean_batch_size"]
        ms = [f"{lat[q]:.0f}" if lat else "-" for q in ("p50", "p95", "p99")]
        lines.append(f"| {'on' if r['adaptive_batching'] else 'off'} | {r['requests_per_s']:.1f} | {' | '.join(ms)} | "
                     f"{f'{batch:.1f}' if batch else '-'} | {sum(r['errors'].values())} {r['errors'] or ''} |")
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
