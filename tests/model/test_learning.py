"""Learning proof: a tiny model memorises real Re-DocRED documents through the whole chain.

linearize -> train (rows, symbol loss) -> constrained row decoding -> parse -> official DocRED
scorer. A break anywhere (targets, prefixes, label shift, code <-> id mapping, constraint, parser,
entity numbering, scorer) keeps F1 far below 95.
"""


from dore.config import DecodingConfig, TrainConfig
from dore.data.docred import load_rel_info, read_docred
from dore.extract import Extractor
from dore.methods.dore import DoreMethod
from dore.model.backbone import load_backbone
from dore.scoring.score import score
from dore.symbolic.layout import docred_layout
from dore.training.loop import train


def test_tiny_bart_memorises_five_real_documents(shared_data, tmp_path):
    docs = sorted(read_docred(shared_data / "redocred" / "dev_revised.json")[0], key=lambda d: len(d.tokens))
    picked = [d for d in docs if len(d.unique_relations()) >= 8][:5]
    assert sum(len(d.unique_relations()) for d in picked) >= 50
    layout = docred_layout(load_rel_info(shared_data / "docred" / "rel_info.json"), n_slots=40)
    backbone = load_backbone("tiny-bart", layout, seed=0)
    cfg = TrainConfig(backbone="tiny-bart", mode="rows", sampling="none", epochs=200, lr=3e-3, warmup_ratio=0.05,
                      batch_docs=5, checkpoint_every_steps=10**6, log_every_steps=50, mixed_precision="no")
    result = train(cfg, DoreMethod(cfg, backbone, layout), picked, tmp_path)
    assert result.history[-1]["train_loss"] < 0.1

    extractor = Extractor(backbone, layout, DecodingConfig(mode="rows"))
    predictions = {d.doc_id: [(r.args, r.label) for r in rels] for d, rels in zip(picked, extractor.extract(picked))}
    metrics = score(predictions, picked)
    assert metrics["scorer"] == "docred_official"
    assert metrics["f1"] >= 95, metrics
    assert sum(extractor.stats.parse.values()) == 0  # the constrained decoder needed no repair
