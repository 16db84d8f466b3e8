"""Coreference for SciREX end-to-end relation extraction (docs/scirex_coref.md §3-§5).

A backend turns SciREX documents into clusters of word spans, labelled with a setting:

| backend | setting | mentions | clusters |
|---|---|---|---|
| `gold` | `gold_input` | gold | gold (salient, sub-methods merged) |
| `string-match` | `gold_mentions_pred_clusters` | gold NER | string rules (weight-free) |
| `fast-coref-log` | `end_to_end` | model | imported shtoshni/fast-coref log |
| `fastcoref` | `end_to_end` | model | imported `scripts/run_fastcoref.py` output |

`run_coref` runs one and writes a canonical result file (`dore.coref.io`); `clusters_to_documents`
turns a result into DORE input documents; `score_relations` scores DORE's relations over them
against the gold; `coref_quality` gives MUC, B³ and CEAF-e against the gold salient clusters.
"""

from dore.coref.backends import BACKENDS, CorefBackend, Gold, make_backend, resolve
from dore.coref.compose import clusters_to_documents, score_relations
from dore.coref.importers import FastcorefJsonl, FastCorefLog, char_spans_to_words, word_char_offsets
from dore.coref.io import read_result, write_result
from dore.coref.quality import coref_quality
from dore.coref.result import SETTINGS, CorefDoc, CorefResult
from dore.coref.run import run_coref
from dore.coref.string_match import StringMatch, StringMatchConfig

__all__ = ["BACKENDS", "SETTINGS", "CorefBackend", "CorefDoc", "CorefResult", "FastCorefLog", "FastcorefJsonl", "Gold",
           "StringMatch", "StringMatchConfig", "char_spans_to_words", "clusters_to_documents", "coref_quality",
           "make_backend", "read_result", "resolve", "run_coref", "score_relations", "word_char_offsets",
           "write_result"]
