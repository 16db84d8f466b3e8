"""The `dore` command line: one sub-command per lifecycle stage (each calls the stage's function)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from dore.env import set_offline_defaults

set_offline_defaults()
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(width=None if Console().is_terminal else 160)


def _table(title: str, rows: dict, *, key: str = "metric", value: str = "value") -> Table:
    table = Table(title=title)
    table.add_column(key)
    table.add_column(value, justify="right")
    for k, v in rows.items():
        table.add_row(str(k), f"{v:.2f}" if isinstance(v, float) else str(v))
    return table


@app.command()
def convert(
    inputs: Annotated[list[Path], typer.Argument(help="dataset files (DocRED json, PubTator, EoG .data, RENET folder, SciREX jsonl)")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="folder for <name>.jsonl, .targets.jsonl, .layout.json")] = Path("artifacts/converted"),
    fmt: Annotated[Optional[str], typer.Option("--format", help="override format detection")] = None,
    rel_info: Annotated[Optional[Path], typer.Option(help="DocRED rel_info.json (relation order and names)")] = None,
    preview_sampling: Annotated[Optional[str], typer.Option(help="print sampled targets with this strategy, e.g. dynamic, diagonal:1")] = None,
    preview_docs: Annotated[int, typer.Option(help="documents to preview")] = 2,
    seed: int = 0,
    epoch: int = 0,
):
    """Dataset files -> canonical JSONL documents with their positive symbolic targets."""
    from tqdm import tqdm

    from dore.convert import convert as convert_file, default_layout, read_any
    from dore.data.docred import load_rel_info
    from dore.linearize import build_targets
    from dore.sampling import SamplingConfig

    rel = load_rel_info(rel_info) if rel_info else _default_rel_info()
    summary = Table(title="dore convert")
    for col in ("file", "format", "docs", "entities", "mentions", "relations", "unique", "positives",
                "mean len", "max len", "seconds"):
        summary.add_column(col, justify="right" if col not in ("file", "format") else "left")
    for path in inputs:
        stem = path.name.split(".")[0] if path.is_file() else path.name
        started = time.perf_counter()
        s = convert_file(path, out_dir / f"{stem}.jsonl", fmt=fmt, rel_info=rel,
                         progress=lambda docs: tqdm(docs, desc=f"linearize {path.name}", leave=False))
        seconds = time.perf_counter() - started
        summary.add_row(str(path), s["format"], str(s["documents"]), str(s["entities"]), str(s["mentions"]),
                        str(s["relations"]), str(s["unique_relations"]), str(s["positive_tuples"]),
                        str(s["mean_target_length"]), str(s["max_target_length"]), f"{seconds:.2f}")
        if s["quirks"] or s["lost_positives"]:
            console.print(f"[yellow]{path}[/]: quirks {s['quirks']} lost positives {s['lost_positives']}")
        if preview_sampling:
            docs, _, f = read_any(path, fmt)
            layout = default_layout(docs, f, rel)
            cfg = SamplingConfig.parse(preview_sampling)
            for doc in docs[:preview_docs]:
                t = build_targets(doc, layout, cfg, seed=seed, epoch=epoch)
                console.print(f"[bold]{doc.doc_id}[/] ({t.strategy}): {t.render(t.sequence())}")
    console.print(summary)


def _default_rel_info() -> dict[str, str] | None:
    from dore.data.docred import load_rel_info
    from dore.datasets import data_root

    path = data_root() / "docred" / "rel_info.json"
    return load_rel_info(path) if path.exists() else None


@app.command()
def score(
    predictions: Annotated[Path, typer.Argument(help="result.json (CodaLab), a dataset file, or dore JSONL documents")],
    gold: Annotated[Path, typer.Argument(help="gold dataset file")],
    train: Annotated[Optional[list[Path]], typer.Option(help="DocRED: files trained on (Ign F1 fact set)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="write the metrics JSON here")] = None,
):
    """Predictions + gold -> the dataset's official metrics table (percent)."""
    from dore.convert import read_any
    from dore.evaluate import predictions_from_documents, score as score_fn

    gold_docs, _, _ = read_any(gold)
    records = None
    if predictions.suffix == ".json" and _is_result_json(predictions):
        from dore.data.docred import read_docred_result
        records = [p.model_dump(exclude_none=True) for p in read_docred_result(predictions)]
        preds = {}
    else:
        preds = predictions_from_documents(read_any(predictions)[0])
    train_docs = [d for p in train for d in read_any(p)[0]] if train else None
    metrics = score_fn(preds, gold_docs, train_docs=train_docs, docred_results=records)
    _print_metrics(metrics, f"{predictions.name} vs {gold.name}")
    if out:
        from dore.data.model import atomic_write_text
        atomic_write_text(out, json.dumps(metrics, indent=1, default=str))


def _is_result_json(path: Path) -> bool:
    with open(path, encoding="utf-8") as fh:
        head = fh.read(4096).lstrip()
    return head.startswith("[") and '"h_idx"' in head


def _print_metrics(metrics: dict, title: str) -> None:
    from dore.evaluate import headline

    console.print(_table(f"{title} [{metrics['scorer']}]", headline(metrics)))
    if "breakdown" in metrics:
        b = metrics["breakdown"]
        rows = {f"{k}_{m}": v for k, sub in b.items() if isinstance(sub, dict) for m, v in sub.items()
                if isinstance(v, (int, float))}
        console.print(_table("Re-DocRED breakdown (no Ign)", rows))
    for name in ("binary", "4ary"):
        if name in metrics:
            console.print(_table(f"SciREX {name} [{metrics[name].get('scorer')}]", headline(metrics[name])))
    for w in metrics.get("official", {}).get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}")


if __name__ == "__main__":
    app()
