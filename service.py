"""BentoML service: `POST /extract` runs the same `Extractor.extract` as `dore predict`.

    bentoml serve service:DoreService --host 127.0.0.1 --port 3000

The model comes from the project's BentoML model store, `.bentoml` in the checkout unless
`BENTOML_HOME` names another (dore/env.py: the store `dore package`, the DVC stages and the flow
put models in): `dore-docred:latest` unless `DORE_BENTO_MODEL` names another tag.

Configuration (environment, read at start; bench/bench_service.py compares them):
- `DORE_BATCHING`: `continuous` (default): continuous row batching, a document's rows join the
  decoder at its next step and each request is answered as soon as its own documents are done
  (`dore.stream.ContinuousExtraction`); `on`: BentoML's adaptive batching (a batch is decoded
  to its slowest document); `off`: one request at a time.
- `DORE_QUANTIZE`: `off` (default): float, exactly what `dore predict` computes, whatever the
  batch; `int8`: int8 dynamic quantization of every linear layer but the output layer
  (`dore.model.quantize`, as `dore predict --quantize all`); `int8-decoder`: the decoder's only.
  int8 is faster and approximate: on the main job's model it moved test F1 on all 500
  test_revised documents by -0.21 (bench/results/decoding_f1_main_job.json). Its activations are
  scaled per batch, so a document's answer may change with the traffic it is batched with; that
  is why it is not the default. `GET /model` says which is served.
- `DORE_WORKERS` (default 1): server processes, each with its own model copy.
- `DORE_TORCH_THREADS`: torch threads per worker; default `OMP_NUM_THREADS` if set, else the
  machine's CPUs divided by the workers.
- `DORE_MAX_ROWS` (default 512): rows decoded at once in continuous mode (memory bound).

Why two endpoints: a batchable BentoML API takes exactly one batch argument and the
dispatcher hands it a list merged from many requests, so a request cannot be refused on its
own inside it, and an exception there fails every request in the batch. `/extract` is a plain
async API: it checks each request document (dore/serving.py) and answers a bad one with its
own 4xx, then hands the valid `Document`s to the batchable `/extract_batch` through the
service's own BentoML client (`self.to_async`), which goes through the adaptive-batching
dispatcher. `/extract_batch` still checks every document again and isolates failures, so a
document sent to it directly, or one that breaks the model, only fails itself.

Also served: `GET /model` (tag, layout, relation names, dev metrics), BentoML's `/healthz`,
`/livez`, `/readyz`, `/metrics`, and the OpenAPI UI at `/` (spec at `/docs.json`).
"""

from __future__ import annotations

from dore.env import set_offline_defaults

set_offline_defaults()  # no analytics, no hub, the project's model store: before bentoml and transformers read them

import asyncio  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from typing import Annotated  # noqa: E402

import aiohttp  # noqa: E402
import anyio  # noqa: E402
import bentoml  # noqa: E402
from bentoml.exceptions import BentoMLException  # noqa: E402
from fastapi import FastAPI  # noqa: E402
import torch  # noqa: E402
from pydantic import Field  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402

from dore.data.model import DataError, Document  # noqa: E402
from dore.extract import Extractor, TextExtraction  # noqa: E402
from dore.stream import ContinuousExtraction  # noqa: E402
from dore.serving import (  # noqa: E402
    FIND_ENTITIES,
    MAX_DOCUMENTS_PER_REQUEST,
    DocumentIn,
    DocumentResult,
    Extraction,
    ExtractResponse,
    ModelInfo,
    check_document,
    model_info,
    refusal,
    to_document,
)

MODEL_TAG = os.environ.get("DORE_BENTO_MODEL", "dore-docred:latest")
BATCHING = os.environ.get("DORE_BATCHING", "continuous").lower()
if BATCHING in ("0", "false", "no"):
    BATCHING = "off"
if BATCHING not in ("continuous", "on", "off"):
    raise ValueError(f"DORE_BATCHING must be continuous, on or off, not {BATCHING!r}")
ADAPTIVE_BATCHING = BATCHING == "on"
QUANTIZE = os.environ.get("DORE_QUANTIZE", "off").lower()
QUANTIZE_SCOPES = {"off": None, "": None, "int8": "all", "int8-decoder": "decoder"}
if QUANTIZE not in QUANTIZE_SCOPES:
    raise ValueError(f"DORE_QUANTIZE must be int8, int8-decoder or off, not {QUANTIZE!r}")
WORKERS = int(os.environ.get("DORE_WORKERS", "1"))
TORCH_THREADS = int(os.environ.get("DORE_TORCH_THREADS") or os.environ.get("OMP_NUM_THREADS")
                    or max(1, (os.cpu_count() or 1) // WORKERS))
MAX_ROWS = int(os.environ.get("DORE_MAX_ROWS", "512"))  # ~25 documents: their cross-attention keys bound memory
MAX_BATCH_DOCUMENTS = 16
# The dispatcher answers 503 to requests it expects to wait longer than this: keep it near
# the traffic timeout so bursts queue instead of being shed.
MAX_BATCH_LATENCY_MS = 60_000

logger = logging.getLogger(__name__)
info_app = FastAPI(title="DORE model info", docs_url=None, redoc_url=None, openapi_url=None)


# runner_connection: BentoML 1.4.31+ renews its client session every 100 requests and closes the
# old one with calls still in flight ("Server disconnected", bentoml/BentoML#5540); the session
# here is the service's in-process client to itself, so never renew it.
@bentoml.service(resources={"cpu": str(WORKERS * TORCH_THREADS)}, traffic={"timeout": 90}, workers=WORKERS,
                 runner_connection={"max_requests": 2**31 - 1, "max_age": 1e9})
@bentoml.asgi_app(info_app, path="/")
class DoreService:
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        torch.set_num_threads(TORCH_THREADS)
        self.extractor = Extractor.from_pretrained(self.model_ref.path, quantize=QUANTIZE_SCOPES[QUANTIZE])
        self.tag = str(self.model_ref.tag)
        self.continuous = (ContinuousExtraction(self.extractor, self.served_decoding(), max_rows=MAX_ROWS)
                           if BATCHING == "continuous" else None)

    def served_decoding(self):
        """The model's decoding (biases chosen on dev) as served: rows, greedy, symbol head."""
        return self.extractor.decoding.model_copy(update={"mode": "rows", "num_beams": 1, "symbol_head": True})

    @info_app.get("/model", response_model=ModelInfo)
    def model(self) -> ModelInfo:
        """The served model: tag, symbol layout, relation names, dev metrics, limits."""
        return model_info(self.tag, self.extractor.layout, self.extractor.card, ADAPTIVE_BATCHING,
                          QUANTIZE_SCOPES[QUANTIZE])

    @bentoml.api
    async def extract(
        self,
        documents: Annotated[list[DocumentIn], Field(min_length=1, max_length=MAX_DOCUMENTS_PER_REQUEST)],
    ) -> ExtractResponse:
        """Relations of each document. A document the model cannot take is answered 413/422
        with `{"error", "document", "field"}`; malformed requests get BentoML's 400."""
        try:
            docs = [to_document(d, i, self.extractor.layout) for i, d in enumerate(documents)]
        except DataError as exc:
            status, body = refusal(exc)
            return JSONResponse(body, status_code=status)
        if self.extractor.recognizer is None:
            unread = next((doc.doc_id for doc in docs if doc.meta.get(FIND_ENTITIES)), None)
            if unread is not None:
                return JSONResponse({"error": f"this model ({self.tag}) has no entity recognizer: give the "
                                     "document's entities", "document": unread, "field": "entities"}, status_code=422)
        client = getattr(self, "to_async", None)  # set by BentoML's server; absent in a bare DoreService()
        if self.continuous is not None:
            try:
                outcomes = await self._continuous(docs)
            except Exception:  # noqa: BLE001 - a failed decoder step: retried one by one, so only the culprit fails
                logger.exception("continuous extraction failed; extracting the request's documents one by one")
                outcomes = await anyio.to_thread.run_sync(self.extract_batch.local, docs)
        elif client is not None:
            try:
                outcomes = await client.extract_batch(documents=docs)
            except (BentoMLException, aiohttp.ClientError, TimeoutError) as exc:  # shed by the dispatcher, timed out
                logger.warning("extract_batch did not answer: %s", exc)
                return JSONResponse({"error": "the model is overloaded; retry later", "document": None, "field": None},
                                    status_code=503, headers={"Retry-After": "5"})
        else:
            outcomes = await anyio.to_thread.run_sync(self.extract_batch.local, docs)
        for doc, outcome in zip(docs, outcomes):
            if outcome.error is not None:
                return JSONResponse({"error": outcome.error, "document": doc.doc_id, "field": None},
                                    status_code=outcome.status)
        return ExtractResponse(model=self.tag, documents=[
            DocumentResult(id=doc.doc_id, relations=outcome.relations, entities=outcome.entities,
                           entities_dropped=outcome.entities_dropped) for doc, outcome in zip(docs, outcomes)])

    async def _continuous(self, docs: list[Document]) -> list[Extraction]:
        """Continuous row batching; documents sent without entities get them from the recognizer first."""
        unread = [i for i, doc in enumerate(docs) if doc.meta.get(FIND_ENTITIES)]
        recognized = await anyio.to_thread.run_sync(self.extractor.recognize, [docs[i] for i in unread]) \
            if unread else []
        ready, dropped = list(docs), {}
        for i, (doc, n_dropped) in zip(unread, recognized):
            ready[i], dropped[i] = doc, n_dropped
        predicted = await asyncio.wrap_future(self.continuous.submit(ready))
        return [Extraction.found(TextExtraction(doc, rels, dropped[i])) if i in dropped else Extraction.of(rels)
                for i, (doc, rels) in enumerate(zip(ready, predicted))]

    @bentoml.api(batchable=ADAPTIVE_BATCHING, max_batch_size=MAX_BATCH_DOCUMENTS, max_latency_ms=MAX_BATCH_LATENCY_MS)
    def extract_batch(self, documents: list[Document]) -> list[Extraction]:
        """Relations of dore `Document`s (the JSONL form of `dore convert`), one outcome per
        document; documents from many `/extract` requests are batched here."""
        outcomes: dict[int, Extraction] = {}
        admitted: dict[int, Document] = {}
        for i, doc in enumerate(documents):
            try:
                admitted[i] = check_document(doc, self.extractor.layout)
            except DataError as exc:
                outcomes[i] = Extraction.refused(exc)
        given = {i: doc for i, doc in admitted.items() if not doc.meta.get(FIND_ENTITIES)}
        unread = {i: doc for i, doc in admitted.items() if doc.meta.get(FIND_ENTITIES)}
        try:
            if given:
                predicted = self.extractor.extract(list(given.values()))
                outcomes.update({i: Extraction.of(rels) for i, rels in zip(given, predicted)})
            if unread:
                found = self.extractor.extract_text(list(unread.values()))
                outcomes.update({i: Extraction.found(result) for i, result in zip(unread, found)})
        except Exception:  # noqa: BLE001 - retried one by one, so only the culprit fails
            logger.exception("batch of %d documents failed; extracting them one by one", len(admitted))
            outcomes.update({i: self._extract_one(doc) for i, doc in admitted.items()})
        return [outcomes[i] for i in range(len(documents))]

    def _extract_one(self, doc: Document) -> Extraction:
        try:
            if doc.meta.get(FIND_ENTITIES):
                return Extraction.found(self.extractor.extract_text([doc])[0])
            return Extraction.of(self.extractor.extract([doc])[0])
        except DataError as exc:
            return Extraction.refused(exc)
        except Exception as exc:  # noqa: BLE001 - a model failure on one document must not fail the others
            logger.exception("document %r failed", doc.doc_id)
            return Extraction(error=f"extraction failed ({type(exc).__name__}); see the server log", status=500)
