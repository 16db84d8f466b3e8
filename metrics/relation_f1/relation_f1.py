"""`evaluate` wrapper around the dore relation scorers (dore.scoring.docred, dore.scoring.bio).

It is a thin wrapper: the plain functions are the reference, and this module only decodes JSON
strings and dispatches. Load it offline with `evaluate.load("metrics/relation_f1")`.
"""

import json

import datasets
import evaluate

from dore.data.model import Document
from dore.scoring.bio import candidate_f1, dore_variant_f1
from dore.scoring.docred import docred_score, redocred_breakdown

_DESCRIPTION = """\
Document-level relation extraction scores, each named by its scorer:
- "docred_official": thunlp/DocRED evaluation.py (RE, evidence and Ign F1);
- "redocred_benchmark": the Re-DocRED frequent/long-tail/intra/inter subsets;
- "atlop_candidate_f1": CDR/GDA micro F1 over candidate pairs, as ATLOP computes it;
- "dore_micro": DORE's own CDR/GDA micro variant.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: one JSON string per document. For the DocRED scorers it is a list of
        {"title", "h_idx", "t_idx", "r", "evidence"?} objects; all lists are pooled, and the title
        says which document each fact belongs to. For the CDR/GDA scorers it is a list of
        [head, tail] entity-index pairs predicted for `label`, for the reference at the same position.
    references: one `dore.data.model.Document` JSON string (Document.to_json()) per document.
    scorer: "docred_official" (default), "redocred_benchmark", "atlop_candidate_f1" or "dore_micro".
    label: the positive relation label for the CDR/GDA scorers ("CID" or "GDA").
    train_facts_annotated, train_facts_distant: (head name, tail name, r) triples for Ign F1
        (see dore.scoring.docred.train_facts); None gives n/a.
    relations: the label inventory for the Re-DocRED long-tail subset (optional).
Returns:
    the scorer's dict: percentages, raw counts, "scorer" and "warnings".
"""

_CITATION = """\
@inproceedings{yao-etal-2019-docred, title={{D}oc{RED}: A Large-Scale Document-Level Relation Extraction Dataset},
  author={Yao, Yuan and others}, booktitle={ACL}, year={2019}}
@inproceedings{tan-etal-2022-revisiting, title={Revisiting {D}oc{RED} - Addressing the False Negative Problem in Relation Extraction},
  author={Tan, Qingyu and others}, booktitle={EMNLP}, year={2022}}
@inproceedings{zhou2021atlop, title={Document-Level Relation Extraction with Adaptive Thresholding and Localized Context Pooling},
  author={Zhou, Wenxuan and Huang, Kevin and Ma, Tengyu and Huang, Jing}, booktitle={AAAI}, year={2021}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RelationF1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, scorer="docred_official", label=None,
                 train_facts_annotated=None, train_facts_distant=None, relations=None):
        gold = [Document.from_json(ref) for ref in references]
        if scorer in ("docred_official", "redocred_benchmark"):
            facts = [pred for doc_preds in predictions for pred in json.loads(doc_preds)]
            if scorer == "redocred_benchmark":
                return redocred_breakdown(facts, gold, relations=relations)
            return docred_score(facts, gold, train_facts_annotated=_fact_set(train_facts_annotated),
                                train_facts_distant=_fact_set(train_facts_distant))
        if scorer in ("atlop_candidate_f1", "dore_micro"):
            if label is None:
                raise ValueError(f"scorer {scorer!r} needs the positive relation label, e.g. label='CID'")
            pairs = {doc.doc_id: [tuple(pair) for pair in json.loads(doc_preds)]
                     for doc, doc_preds in zip(gold, predictions)}
            score = candidate_f1 if scorer == "atlop_candidate_f1" else dore_variant_f1
            return score(pairs, gold, label)
        raise ValueError(f"unknown scorer {scorer!r}; expected docred_official, redocred_benchmark, "
                         "atlop_candidate_f1 or dore_micro")


def _fact_set(facts):
    return None if facts is None else {tuple(fact) for fact in facts}
