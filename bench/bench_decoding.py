"""Decoding and training benchmark: one model, one set of Re-DocRED test documents, one run.

    python bench/bench_decoding.py [--model artifacts/docred/model] [--docs 20] [--baseline-rev REV] [--f1-docs 500]

Writes bench/results/decoding.md and bench/results/decoding.json. First, for every model (entity-symbol
models included), the speed levers of the served decoding (rows, greedy, symbol head, the model's
biases), side by side in one run, per document: one encoder pass; full decoding as the code at
`--baseline-rev` does it (a copy of that revision's `dore` in a subprocess); and here with each lever
off and on (finished rows leaving the batch, the reused self-attention cache, int8 dynamic
quantization, continuous row batching), rounds interleaved so that load on the machine hits every
variant alike. `--f1-docs N`: test F1 (DocRED scorer, `test_revised`) on the first N documents with
and without int8 quantization. Then, for models without entity symbols (whose full-vocabulary and
`generate` paths exist), the original comparisons (CPU unless CUDA is present):
parallel rows vs single sequence (docs/s, sequential decoder steps per document),
encode-once rows vs re-encoding per row, the vectorised constraint vs a per-hypothesis
Python callback, the symbol-only output head vs the full vocabulary, decode time as a
multiple of one encoder pass, and training tokens/s with peak memory.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dore.env import set_offline_defaults  # noqa: E402

set_offline_defaults()


BATCH_SIZES = (1, 32)  # documents per batch: alone, and more than a service's queue usually holds
BASELINE_REV = "53de7be"  # the revision of the #17 service baseline (bench/results/service_baseline.md)

# Run by the baseline revision's own code (argv: its source folder, model, batch docs, rounds, docs file).
BASELINE_SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from dore.env import set_offline_defaults
set_offline_defaults()
import torch
from dore.data.model import read_jsonl
from dore.extract import Extractor
torch.set_num_threads(int(sys.argv[6]))
ex = Extractor.from_pretrained(sys.argv[2])
docs = list(read_jsonl(sys.argv[5]))
cfg = ex.decoding.model_copy(update={"mode": "rows", "num_beams": 1, "symbol_head": True, "batch_docs": int(sys.argv[3])})
ex.extract(docs[:2], cfg)  # warm-up
times = []
for _ in range(int(sys.argv[4])):
    start = time.perf_counter()
    ex.extract(docs, cfg)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def baseline_seconds(rev: str, model: str, docs, batch_docs: int, rounds: int) -> list[float]:
    """Seconds per round of decoding `docs` with the code of `rev` (its dore package, exported to
    a temporary folder), in a subprocess."""
    import subprocess
    import tempfile

    from dore.data.model import write_jsonl

    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="dore-baseline-") as tmp:
        archive = subprocess.run(["git", "archive", rev, "dore"], cwd=repo, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        write_jsonl(Path(tmp) / "docs.jsonl", docs)
        out = subprocess.run([sys.executable, "-c", BASELINE_SCRIPT, tmp, str(Path(model).resolve()), str(batch_docs),
                              str(rounds), str(Path(tmp) / "docs.jsonl"), str(torch.get_num_threads())],
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def levers(args, docs, root) -> dict:
    """Seconds per document of one encoder pass and of full decoding with each lever, rounds
    interleaved (the fastest round counts); test F1 with and without int8 if asked."""
    from unittest import mock

    from dore.decoding import generate as generate_module
    from dore.decoding.greedy import GreedyRows
    from dore.extract import Extractor
    from dore.stream import ContinuousExtraction
    from dore.model.inputs import encode, pad_batch

    ex = Extractor.from_pretrained(args.model)
    ex.backbone.model.eval()
    qex = Extractor.from_pretrained(args.model, quantize="all")
    qdex = Extractor.from_pretrained(args.model, quantize="decoder")
    docs = [d for d in docs if _fits(ex, d)]
    served = ex.decoding.model_copy(update={"mode": "rows", "num_beams": 1, "symbol_head": True,
                                            "batch_docs": args.batch_docs})
    cfg = served.model_copy(update={"sort_by_length": False})  # one lever at a time: documents in order
    static = cfg.model_copy(update={"compact_rows": False})
    bb = ex.backbone

    def encoder_only(ordered: bool):
        def run():
            _, ids = ex._inputs(docs, cfg)
            if ordered:
                ids = sorted(ids, key=len)
            with torch.no_grad():
                for start in range(0, len(ids), args.batch_docs):
                    padded = pad_batch(ids[start: start + args.batch_docs], bb.pad_id)
                    encode(bb.model, padded, (padded != bb.pad_id).long(), cfg.chunk_length)
        return run

    def without_self_cache():
        no_cache = lambda *a, **k: GreedyRows(*a, **{**k, "self_cache": False})  # noqa: E731
        with mock.patch.object(generate_module, "GreedyRows", no_cache):
            ex.extract(docs, cfg)

    def continuous(extractor):
        def run():
            stream = ContinuousExtraction(extractor, served)
            try:
                for future in [stream.submit([d]) for d in docs]:  # every document its own request, all at once
                    future.result()
            finally:
                stream.close()
        return run

    variants = {
        "encoder pass only": encoder_only(False),
        "encoder pass only, length-sorted batches": encoder_only(True),
        "rows run to the batch's end (no compaction)": lambda: ex.extract(docs, static),
        "no self-attention cache (compaction on)": without_self_cache,
        "finished rows leave the batch (compaction)": lambda: ex.extract(docs, cfg),
        "compaction + length-sorted batches (default)": lambda: ex.extract(docs, served),
        "compaction + length-sorted + int8": lambda: qex.extract(docs, served),
        "compaction + length-sorted + int8 decoder only": lambda: qdex.extract(docs, served),
        # what batching can gain at all on this machine: the same decoding, one document per batch
        # (the unbatched service) and many (#17's batched >= 2 x unbatched target)
        **{f"compaction + length-sorted, batches of {k}": (
            lambda k=k: ex.extract(docs, served.model_copy(update={"batch_docs": k}))) for k in BATCH_SIZES},
        "continuous row batching (service default)": continuous(ex),
        "continuous row batching + int8": continuous(qex),
    }
    for fn in variants.values():  # warm-up
        if fn is not without_self_cache:
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    seconds[f"baseline: the code at {args.baseline_rev}"] = []
    for _ in range(args.rounds):
        seconds[f"baseline: the code at {args.baseline_rev}"] += baseline_seconds(
            args.baseline_rev, args.model, docs, args.batch_docs, 1)
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    out = {"documents": len(docs), "batch_docs": args.batch_docs, "rounds": args.rounds,
           "threads": torch.get_num_threads(), "baseline_rev": args.baseline_rev,
           "s_per_doc": {name: min(s) / len(docs) for name, s in seconds.items()}, "seconds": seconds}
    if args.f1_docs:
        out["f1"] = {"documents": args.f1_docs, "split": "test_revised", "scorer": "docred_official (dore.scoring)",
                     "float": test_f1(ex, served, root, args.f1_docs), "int8": test_f1(qex, served, root, args.f1_docs),
                     "int8_decoder": test_f1(qdex, served, root, args.f1_docs)}
    return out


def _fits(ex, doc) -> bool:
    try:
        ex.check_fits(doc)
        return True
    except Exception:  # noqa: BLE001 - more entities than slots
        return False


def test_f1(ex, cfg, root, n: int) -> dict:
    """DocRED scorer F1 on the first `n` test_revised documents; a document that does not fit the
    model's slots is predicted empty (and counted)."""
    from dore.data.docred import read_docred
    from dore.scoring.score import score

    gold = read_docred(root / "redocred" / "test_revised.json")[0][:n]
    fit = [d for d in gold if _fits(ex, d)]
    start = time.perf_counter()
    predictions = {d.doc_id: [] for d in gold} | ex.predictions(fit, cfg)
    seconds = time.perf_counter() - start
    metrics = score(predictions, gold)
    return {"f1": metrics["f1"], "p": metrics["p"], "r": metrics["r"], "documents": len(gold),
            "not_fitting": len(gold) - len(fit), "seconds": seconds}


def levers_table(lv: dict) -> list[str]:
    per_doc = lv["s_per_doc"]
    base = per_doc[f"baseline: the code at {lv['baseline_rev']}"]
    enc = per_doc["encoder pass only"]
    lines = [f"# Decoding levers ({lv['threads']} torch threads, {lv['documents']} Re-DocRED test_revised documents, "
             f"batches of {lv['batch_docs']}, fastest of {lv['rounds']} interleaved rounds)", "",
             "| decoding (rows, greedy, symbol head) | ms per document | x baseline | x encoder pass |",
             "|---|---|---|---|"]
    for name, s in per_doc.items():
        lines.append(f"| {name} | {1e3 * s:.0f} | {s / base:.2f} | {s / enc:.1f} |")
    alone = per_doc.get(f"compaction + length-sorted, batches of {BATCH_SIZES[0]}")
    batched = {name: s for name, s in per_doc.items() if name in (
        "compaction + length-sorted batches (default)", "continuous row batching (service default)",
        *(f"compaction + length-sorted, batches of {k}" for k in BATCH_SIZES[1:]))}
    if alone and batched:
        best = min(batched, key=batched.get)
        lines += ["", f"Batching's ceiling on this machine (float, same threads): a document decoded alone costs "
                      f"{1e3 * alone:.0f} ms, in the fastest batched way ({best}) {1e3 * batched[best]:.0f} ms, "
                      f"so batching can raise decoding throughput at most {alone / batched[best]:.2f} x."]
    if "f1" in lv:
        f = lv["f1"]
        lines += ["", f"Test F1 ({f['scorer']}, first {f['documents']} test_revised documents): "
                      f"float {f['float']['f1']:.2f}, int8 {f['int8']['f1']:.2f} "
                      f"({f['int8']['f1'] - f['float']['f1']:+.2f}), int8 decoder only {f['int8_decoder']['f1']:.2f} "
                      f"({f['int8_decoder']['f1'] - f['float']['f1']:+.2f}); target: within 0.5."]
    return lines


def timed(fn, repeats: int = 1):
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return (time.perf_counter() - start) / repeats, out


class ForcedCodes:
    """Stands in for the symbol constraint and allows exactly one code per step: a decoder forced
    to write a given code sequence, at the cost of free greedy decoding with the symbol head."""

    def __init__(self, layout, codes: torch.Tensor, prefix_len: int):
        self.layout, self.codes, self.prefix_len = layout, codes, prefix_len

    def allowed_codes(self, ids: torch.Tensor) -> torch.Tensor:
        step = min(ids.shape[1] - self.prefix_len, self.codes.shape[1] - 1)
        return torch.nn.functional.one_hot(self.codes[:, step], self.layout.n_codes).bool()


def same_tuples_as_sequence(ex, docs, rows_cfg) -> dict:
    """Rows vs single sequence on the same output: decode rows, then time one sequence per document
    that writes exactly the tuples the rows wrote (head, tail, relation ..., EOS), with the same
    encoder, decoder, KV cache and symbol head. Independent of whether the model was trained for
    sequence mode, so it measures what the output layout costs."""
    from dore.decoding.generate import fast_greedy
    from dore.model.inputs import pad_batch

    bb, layout = ex.backbone, ex.layout
    eos, k = layout.eos_code, layout.arity
    generated = ex.generate(docs, rows_cfg)
    sequences, row_steps = [], []
    for _, _, rows in generated:
        seq = [c for r in rows for i in range(0, len(r.codes) - k + 1, k) for c in (r.head, *r.codes[i: i + k])]
        sequences.append(seq + [eos])
        row_steps.append(max((len(r.codes) + 1 for r in rows), default=1))
    code_to_id = torch.as_tensor(bb.code_to_id)
    prefix = torch.tensor(bb.decoder_prefix)

    def decode_all():
        for start in range(0, len(docs), rows_cfg.batch_docs):
            batch_ids = [g[1] for g in generated[start: start + rows_cfg.batch_docs]]
            batch_seqs = sequences[start: start + rows_cfg.batch_docs]
            ids, codes = pad_batch(batch_ids, bb.pad_id), pad_batch(batch_seqs, eos)
            mask = (ids != bb.pad_id).long()
            with torch.no_grad():
                hidden = bb.model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
            prefixes = prefix.expand(len(ids), -1)
            out, _ = fast_greedy(bb.model, hidden, mask, prefixes, ForcedCodes(layout, codes, prefixes.shape[1]),
                                 code_to_id, codes.shape[1])
            assert torch.equal(out, codes), "the forced decoder must write the rows' tuples"

    seconds, _ = timed(decode_all)
    return {"docs_per_s": len(docs) / seconds, "seconds": seconds,
            "decoder_steps_per_doc": sum(map(len, sequences)) / len(docs),
            "rows_decoder_steps_per_doc": sum(row_steps) / len(docs),
            "tuples_per_doc": sum((len(s) - 1) // (k + 1) for s in sequences) / len(docs)}


def main() -> None:
    from collections import Counter

    from dore.data.datasets import data_root
    from dore.data.docred import load_rel_info, read_docred
    from dore.decoding.constraint import slot_mask
    from dore.decoding.generate import generate_rows
    from dore.decoding.reference import time_constraint_step
    from dore.extract import Extractor
    from dore.methods.dore import decoder_sequences
    from dore.methods.seq2seq import collate, make_examples, row_loss
    from dore.model import entities
    from dore.model.backbone import load_backbone
    from dore.model.inputs import encode_document
    from dore.symbolic.layout import docred_layout
    from dore.symbolic.sampling import SamplingConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="artifacts/docred/model")
    ap.add_argument("--docs", type=int, default=20)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--batch-docs", type=int, default=8, help="documents per batch in the levers' timings")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds per lever (the fastest counts)")
    ap.add_argument("--baseline-rev", default=BASELINE_REV,
                    help="git revision whose decoding is the baseline (run from a copy of its dore package)")
    ap.add_argument("--f1-docs", type=int, default=0, help="test F1 with and without int8 on the first N documents")
    ap.add_argument("--levers-only", action="store_true", help="skip the original comparisons")
    ap.add_argument("--f1-only", action="store_true", help="only the --f1-docs F1 comparison (decoding_f1.json)")
    ap.add_argument("--f1-scopes", default="all,decoder", help="with --f1-only: the int8 scopes to score")
    args = ap.parse_args()
    torch.manual_seed(0)
    root = data_root()
    docs = read_docred(root / "redocred" / "test_revised.json")[0][: args.docs]
    if Path(args.model, "dore_model.json").exists():
        ex, model_name = Extractor.from_pretrained(args.model), args.model
    else:  # untrained: timings are valid, output lengths are not representative
        layout = docred_layout(load_rel_info(root / "docred" / "rel_info.json"))
        ex, model_name = Extractor(load_backbone("minilm", layout), layout), "minilm (untrained)"
    bb, layout = ex.backbone, ex.layout
    results: dict = {"model": model_name, "documents": len(docs), "device": "cuda" if torch.cuda.is_available() else "cpu",
                     "threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__}
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    if args.f1_only:  # test F1 with and without int8 only: bench/results/decoding_f1.json
        ex = Extractor.from_pretrained(args.model)
        cfg = ex.decoding.model_copy(update={"mode": "rows", "num_beams": 1, "symbol_head": True})
        f1 = {"model": model_name, "documents": args.f1_docs, "split": "test_revised",
              "scorer": "docred_official (dore.scoring.score)", "threads": torch.get_num_threads(),
              "float": test_f1(ex, cfg, root, args.f1_docs)}
        for scope in args.f1_scopes.split(","):
            f1[f"int8 ({scope})"] = test_f1(Extractor.from_pretrained(args.model, quantize=scope), cfg, root,
                                             args.f1_docs)
            f1[f"int8 ({scope}) minus float"] = f1[f"int8 ({scope})"]["f1"] - f1["float"]["f1"]
        (out / "decoding_f1.json").write_text(json.dumps(f1, indent=1))
        print(json.dumps(f1, indent=1))
        return
    results["levers"] = levers(args, docs, root)
    lever_lines = levers_table(results["levers"])
    if entities.of(bb.model) is not None or args.levers_only:  # no full-vocabulary or `generate` path to compare
        (out / "decoding.json").write_text(json.dumps(results, indent=1))
        (out / "decoding.md").write_text("\n".join(lever_lines) + "\n")
        print("\n".join(lever_lines))
        return

    def config(mode, symbol_head=False):  # the model's own decoding (NA/EOS biases chosen on dev)
        return ex.decoding.model_copy(update={"mode": mode, "batch_docs": 4, "num_beams": 1, "symbol_head": symbol_head})

    def run(mode, **kw):
        ex.stats.decoder_steps = 0
        cfg = config(mode, **kw)
        sec, _ = timed(lambda: ex.extract(docs, cfg))
        steps = ex.stats.decoder_steps / 2 / len(docs)  # stats accumulate over warm-up + run
        return {"docs_per_s": len(docs) / sec, "decoder_steps_per_doc": steps, "seconds": sec}

    results["rows"] = run("rows")
    results["sequence"] = run("sequence")  # free-running: a rows-trained model was never taught this mode
    results["rows_symbol_head"] = run("rows", symbol_head=True)
    results["sequence_same_tuples"] = same_tuples_as_sequence(ex, docs, config("rows", symbol_head=True))

    # Encode-once rows vs re-encoding the document for every row (same rows, same decoder).
    assignments = [layout.assign(d) for d in docs]
    enc = [encode_document(d, a, bb.tokenizer, bb.code_to_id, bb.max_source_length) for d, a in zip(docs, assignments)]

    def rows_for(i, reencode: bool):
        ids = torch.tensor([enc[i].input_ids])
        heads = layout.row_heads(assignments[i].slots)
        mask = slot_mask(layout, [assignments[i].slots])
        common = dict(layout=layout, code_to_id=bb.code_to_id, decoder_prefix=bb.decoder_prefix, max_new_tokens=64)
        if not reencode:
            return generate_rows(bb.model, ids, torch.ones_like(ids), [heads], doc_slots=mask, **common)
        return [generate_rows(bb.model, ids, torch.ones_like(ids), [[h]], doc_slots=mask, **common) for h in heads]

    once, _ = timed(lambda: [rows_for(i, False) for i in range(len(docs))])
    again, _ = timed(lambda: [rows_for(i, True) for i in range(len(docs))])
    results["encode_once_s"], results["reencode_per_row_s"] = once, again

    # One encoder forward pass per document: the floor a classification model pays.
    def encode_all():
        with torch.no_grad():
            for e in enc:
                ids = torch.tensor([e.input_ids])
                bb.model.get_encoder()(input_ids=ids, attention_mask=torch.ones_like(ids))
    enc_s, _ = timed(encode_all)
    results["encoder_pass_s_per_doc"] = enc_s / len(docs)
    # as served and evaluated: rows, greedy, symbol head
    results["decode_over_encoder"] = (1 / results["rows_symbol_head"]["docs_per_s"]) / results["encoder_pass_s_per_doc"]

    # Constraint step: vectorised processor vs per-hypothesis callback, on a realistic row batch.
    slots = [assignments[0].slots] * len(layout.row_heads(assignments[0].slots))
    results["constraint"] = time_constraint_step(layout, slots, mode="rows", heads=layout.row_heads(assignments[0].slots),
                                                 vocab_size=len(bb.tokenizer), generated=16)
    step_ms = 1e3 / results["rows_symbol_head"]["docs_per_s"] / max(results["rows_symbol_head"]["decoder_steps_per_doc"], 1)
    results["constraint"]["share_of_decoder_step"] = results["constraint"]["vectorised_ms"] / step_ms

    # Training throughput (rows, dynamic negatives) and peak memory: the default step (softmax over the
    # symbols, rows in length buckets, cross-attention keys/values once per document) vs the plain one.
    counts = Counter()
    examples = make_examples(docs[:8], bb, layout, None, counts)
    model = bb.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    sampling = SamplingConfig(strategy="dynamic")
    symbol_ids = torch.tensor(bb.code_to_id)
    for name, options in (("train_default", dict(code_to_id=symbol_ids, bucket=True)), ("train_plain", {})):
        tokens, start = 0, time.perf_counter()
        for step in range(4):
            batch = collate([(e, decoder_sequences(e, layout, sampling, "rows", seed=0, epoch=step,
                                                   prefix=list(bb.decoder_prefix), code_to_id=bb.code_to_id,
                                                   max_len=bb.max_target_length, counts=counts))
                             for e in examples[(step % 2) * 4: (step % 2) * 4 + 4]], bb.pad_id, len(bb.decoder_prefix) + 1)
            loss, n = row_loss(model, batch, **options)
            loss.backward(); opt.step(); opt.zero_grad()
            tokens += int(batch["attention_mask"].sum()) + n
        seconds = time.perf_counter() - start
        results[name] = {"tokens_per_s": tokens / seconds, "s_per_step": seconds / 4}
    results["train_tokens_per_s"] = results["train_default"]["tokens_per_s"]
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model.eval()

    (out / "decoding.json").write_text(json.dumps(results, indent=1))
    r, s = results["rows"], results["sequence"]
    rs, q = results["rows_symbol_head"], results["sequence_same_tuples"]
    lines = [f"# Decoding benchmark ({results['device']}, {results['threads']} threads, {len(docs)} Re-DocRED test docs, model {model_name})", "",
             "| measure | value | target |", "|---|---|---|",
             f"| rows: docs/s | {r['docs_per_s']:.2f} | |",
             f"| sequence (free-running; the model was trained on rows): docs/s | {s['docs_per_s']:.2f} | |",
             f"| rows vs free-running sequence docs/s | {r['docs_per_s'] / s['docs_per_s']:.2f}x | |",
             f"| sequential decoder steps/doc: rows / sequence | {r['decoder_steps_per_doc']:.1f} / {s['decoder_steps_per_doc']:.1f} ({s['decoder_steps_per_doc'] / max(r['decoder_steps_per_doc'], 1e-9):.1f}x fewer) | |",
             f"| encode once vs re-encode per row | {once:.2f} s vs {again:.2f} s ({again / once:.2f}x) | |",
             f"| constraint step: vectorised vs Python callback | {results['constraint']['vectorised_ms']:.3f} ms vs {results['constraint']['python_ms']:.3f} ms ({results['constraint']['speedup']:.1f}x) | |",
             f"| constraint share of a decoder step (rows, symbol head) | {100 * results['constraint']['share_of_decoder_step']:.1f} % | <= 5 % |",
             f"| rows with symbol head: docs/s | {results['rows_symbol_head']['docs_per_s']:.2f} ({results['rows_symbol_head']['docs_per_s'] / r['docs_per_s']:.2f}x full vocab) | |",
             f"| same tuples (rows' output, {q['tuples_per_doc']:.1f} tuples/doc incl. NA), symbol head: rows / one sequence docs/s | {rs['docs_per_s']:.2f} / {q['docs_per_s']:.2f} ({rs['docs_per_s'] / q['docs_per_s']:.2f}x) | rows >= 3x |",
             f"| same tuples: sequential decoder steps/doc, rows / one sequence | {q['rows_decoder_steps_per_doc']:.1f} / {q['decoder_steps_per_doc']:.1f} ({q['decoder_steps_per_doc'] / q['rows_decoder_steps_per_doc']:.1f}x fewer) | >= 5x fewer |",
             f"| decode time / encoder pass (rows, symbol head) | {results['decode_over_encoder']:.1f}x | <= 3x |",
             f"| training tokens/s (batch 4 docs): default / plain step | {results['train_default']['tokens_per_s']:.0f} / {results['train_plain']['tokens_per_s']:.0f} ({results['train_plain']['s_per_step'] / results['train_default']['s_per_step']:.1f}x) | |",
             f"| peak RSS | {results['peak_rss_mb']:.0f} MB | |"]
    lines = lever_lines + [""] + lines
    (out / "decoding.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
