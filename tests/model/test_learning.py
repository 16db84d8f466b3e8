"""Learning proof: a tiny model memorises real Re-DocRED documents through the whole chain.

linearize -> train (rows, symbol loss) -> constrained row decoding -> parse -> official DocRED
scorer. A break anywhere (targets, prefixes, label shift, code <-> id mapping, constraint, parser,
entity numbering, scorer) keeps F1 far below 95.
"""


from dore.config import DecodingConfig, TrainConfig
from dore.extract import Extractor
from dore.methods.dore import DoreMethod
from dore.model.backbone import load_backbone
from dore.scoring.score import score
from dore.training.loop import train
from tests.conftest import fixture_docs, fixture_layout


def test_tiny_bart_memorises_five_real_documents(tmp_path):
    # The committed fixture's train and dev documents (tests/fixtures/docred): Re-DocRED documents.
    docs = sorted(fixture_docs("train", "dev"), key=lambda d: len(d.tokens))
    picked = [d for d in docs if len(d.unique_relations()) >= 8][:5]
    assert len(picked) == 5 and sum(len(d.unique_relations()) for d in picked) >= 50
    layout = fixture_layout(n_slots=40)
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
