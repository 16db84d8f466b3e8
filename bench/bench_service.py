"""Load benchmark of the BentoML service: `/extract` latency and throughput under concurrent
clients, per server configuration.

    python bench/bench_service.py                 # the packaged model in $BENTOML_HOME (dore-docred:latest)
    python bench/bench_service.py --tiny          # a random tiny-bart model in a temporary store (smoke run)
    python bench/bench_service.py --url http://127.0.0.1:3000 [--server-pid PID]   # a running server
    python bench/bench_service.py --config new:DORE_BATCHING=continuous --config old:DORE_BATCHING=on@/tmp/old-src

Without `--url` it starts `bentoml serve service:DoreService` once per configuration (`--config
NAME:KEY=VALUE,...[@SOURCE]`: the server's environment, and optionally another checkout to serve
from, e.g. an older revision; default: one per `--modes` value of DORE_BATCHING), warms it up, and
for each `--clients` count sends requests from that many closed-loop clients for `--duration`
seconds (or `--requests` requests), each request one Re-DocRED test document in token form (the
first `--docs` documents that fit the model, in turn). Writes <out>/<name>.md and .json:
p50/p95/p99 latency, 200-responses/s, errors by status (a dropped connection counts as
`disconnected`), the mean batch size the adaptive dispatcher ran (from /metrics), and the server
process tree's resident memory (from /proc) after warm-up, at its peak under load, and after
(each "after" read `SETTLE_S` seconds after the last answer: what the server keeps, not what it
is still releasing).
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
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
SETTLE_S = 2.0  # before an "after" RSS reading: an idle continuous decoder hands its freed heap back
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


def tree_rss_mb(pid: int) -> float | None:
    """Resident memory (MB) of process `pid` and all its descendants, from /proc; None if gone."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            if p == pid:
                return None
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total += int(match.group(1)) if match else 0
        todo += children.get(p, [])
    return total / 1024


class RssSampler:
    """Samples `tree_rss_mb(pid)` every `every` seconds in a thread; `peak` is the largest seen."""

    def __init__(self, pid: int | None, every: float = 1.0):
        self.pid, self.every, self.peak = pid, every, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if self.pid:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self):
        while not self._stop.wait(self.every):
            rss = tree_rss_mb(self.pid)
            if rss is not None:
                self.peak = rss if self.peak is None else max(self.peak, rss)


def parse_config(spec: str) -> tuple[str, dict[str, str], Path | None]:
    """`NAME:KEY=VALUE,KEY=VALUE[@SOURCE]` -> (name, environment, source checkout or None)."""
    spec, _, source = spec.partition("@")
    name, _, assignments = spec.partition(":")
    env = dict(item.split("=", 1) for item in assignments.split(",") if item)
    return name, env, Path(source).resolve() if source else None


@contextmanager
def serve(env_overrides: dict[str, str], model: str, torch_threads: int | None, log: Path, source: Path | None = None):
    """`bentoml serve` in its own process group on a free port (from `source`, another checkout,
    if given); yields (url, pid); stopped (group SIGTERM) on exit."""
    port = free_port()
    env = {**os.environ, "DORE_BENTO_MODEL": model, "BENTOML_DO_NOT_TRACK": "true"}
    if torch_threads:
        env["OMP_NUM_THREADS"] = str(torch_threads)
    env.update(env_overrides)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "service:DoreService", "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=source or REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
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
        yield url, proc.pid
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


def load(url: str, payloads: list[dict], clients: int, requests: int, warmup: int, duration: float | None = None,
         pid: int | None = None) -> dict:
    """Closed loop: `clients` threads keep `clients` requests in flight until `requests` are
    answered, or, with `duration`, until that many seconds have passed. `pid`: the server's,
    whose process tree's memory is read."""
    # keep-alive: the client drops an idle connection before the server (uvicorn: 5 s) does, so it
    # never sends a request on a connection the server is closing ("Server disconnected")
    limits = httpx.Limits(max_connections=clients + 4, keepalive_expiry=2.0)
    with httpx.Client(base_url=url, timeout=300, limits=limits) as http:
        info = http.get("/model").json()

        def send(i: int) -> tuple[int | str, float]:
            start = time.perf_counter()
            try:
                status = http.post("/extract", json={"documents": [payloads[i % len(payloads)]]}).status_code
            except httpx.RemoteProtocolError:  # counted, not fatal: the run goes on
                status = "disconnected"
            except httpx.TimeoutException:
                status = "timeout"
            return status, time.perf_counter() - start

        with ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(send, range(warmup)))  # also trains the dispatcher's latency model
            docs_before, batches_before = batch_counters(http)
            time.sleep(SETTLE_S)
            rss_warm = tree_rss_mb(pid) if pid else None
            sampler = RssSampler(pid).__enter__()
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
            sampler.__exit__()
            time.sleep(SETTLE_S)
            rss_after = tree_rss_mb(pid) if pid else None
        docs_after, batches_after = batch_counters(http)
    ok = [latency for status, latency in results if status == 200]
    batches = batches_after - batches_before
    return {"model": info["model"], "adaptive_batching": info["adaptive_batching"], "requests": len(results),
            "clients": clients, "ok": len(ok), "errors": dict(Counter(str(s) for s, _ in results if s != 200)),
            "wall_s": wall, "requests_per_s": len(ok) / wall, "latency_ms": latency_ms(ok),
            "mean_batch_size": (docs_after - docs_before) / batches if batches else None,
            "rss_mb": {"after_warmup": rss_warm, "peak_under_load": sampler.peak, "after_load": rss_after}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="benchmark this running server instead of starting one per configuration")
    ap.add_argument("--server-pid", type=int, help="with --url: the server's pid, for its memory")
    ap.add_argument("--tiny", action="store_true", help="serve a random tiny-bart model from a temporary store")
    ap.add_argument("--model", default=os.environ.get("DORE_BENTO_MODEL", "dore-docred:latest"))
    ap.add_argument("--clients", default="50", help="concurrent clients; a comma list runs each in turn on one server")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=50, help="requests before each measured load")
    ap.add_argument("--duration", type=float, help="seconds of load per configuration and clients (instead of --requests)")
    ap.add_argument("--name", default="service", help="result files: <out>/<name>.json and .md")
    ap.add_argument("--docs", type=int, default=20, help="distinct Re-DocRED test documents to cycle through")
    ap.add_argument("--modes", default="on,off", help="without --config: DORE_BATCHING values to run, in order")
    ap.add_argument("--config", action="append", default=[],
                    help="NAME:KEY=VALUE,...[@SOURCE]: a server configuration (its environment; SOURCE: serve "
                         "another checkout, e.g. an older revision); repeat for several, run in order")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="OMP_NUM_THREADS of the server; 0: torch's default (all cores). Threads that share cores "
                         "with the clients contend, so 1 unless the server has cores of its own")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args()
    client_counts = [int(c) for c in args.clients.split(",")]
    configs = [parse_config(c) for c in args.config] or \
        [(f"DORE_BATCHING={mode}", {"DORE_BATCHING": mode}, None) for mode in args.modes.split(",")]

    from dore.data.datasets import data_root
    from dore.data.docred import read_docred

    docs = read_docred(data_root() / "redocred" / "test_revised.json")[0]

    def payloads_for(url: str) -> list[dict]:
        slots = httpx.get(f"{url}/model", timeout=10).json()["entity_slots"]
        return [token_request(d) for d in docs if len(d.entities) <= slots][: args.docs]

    def measure(url: str, pid: int | None, config: str) -> None:
        for clients in client_counts:
            run = load(url, payloads_for(url), clients, args.requests, args.warmup, args.duration, pid)
            runs.append({"config": config, **run})
            print(json.dumps({k: runs[-1][k] for k in ("config", "clients", "requests_per_s", "errors", "rss_mb")}),
                  flush=True)

    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="dore-bench-service-") as scratch:
        if args.url:
            measure(args.url, args.server_pid, "as running")
        else:
            model = build_tiny_store(Path(scratch) / "bentoml") if args.tiny else args.model
            for k, (name, env, source) in enumerate(configs):
                log = Path(scratch) / f"serve-{k}.log"
                with serve(env, model, args.torch_threads, log, source) as (url, pid):
                    measure(url, pid, name)

    source = "random tiny-bart, DocRED layout (--tiny)" if args.tiny else args.url or args.model
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    results = {"runs": runs, "model_source": source, "documents": args.docs, "cpus": os.cpu_count(),
               "torch_threads": args.torch_threads, "configs": {name: {"env": env, "source": str(src) if src else None}
                                                                for name, env, src in configs},
               "revision": revision, "duration_s": args.duration, "warmup_requests": args.warmup,
               "python": platform.python_version(), "machine": platform.machine(),
               "note": "clients and server share this machine"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    load_text = f"{args.duration:.0f} s" if args.duration else f"{args.requests} requests"
    lines = [f"# Service benchmark: POST /extract, {load_text} per configuration and clients (bench code {revision})",
             "", f"Model `{runs[0]['model']}` ({source}); one Re-DocRED test document per request ({args.docs} distinct, "
             f"token form), after {args.warmup} warm-up requests; {os.cpu_count()} CPUs shared by clients and server; "
             f"server OMP_NUM_THREADS: {args.torch_threads or 'torch default'} unless the configuration sets threads.", "",
             "| configuration | clients | 200s | 200s/s | p50 ms | p95 ms | p99 ms | mean batch | errors "
             "| RSS MB warm / peak / after | RSS after - warm |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lat, batch, rss = r["latency_ms"] or {}, r["mean_batch_size"], r["rss_mb"]
        ms = [f"{lat[q]:.0f}" if lat else "-" for q in ("p50", "p95", "p99")]
        mem = " / ".join(f"{rss[k]:.0f}" if rss[k] is not None else "-" for k in ("after_warmup", "peak_under_load",
                                                                               "after_load"))
        grew = (f"{rss['after_load'] - rss['after_warmup']:+.0f}"
                if rss["after_load"] is not None and rss["after_warmup"] is not None else "-")
        lines.append(f"| {r['config']} | {r['clients']} | {r['ok']} | {r['requests_per_s']:.1f} | {' | '.join(ms)} | "
                     f"{f'{batch:.1f}' if batch else '-'} | {sum(r['errors'].values())} {r['errors'] or ''} | "
                     f"{mem} | {grew} |")
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
