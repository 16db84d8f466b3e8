"""Backbones: symbol tokens, embedding initialisation, forward pass, safetensors round trip."""

import math

import pytest
import torch
from safetensors.torch import load_file

from dore.data.docred import load_rel_info, read_docred
from dore.data.model import DataError
from dore.model.backbone import embedding_matrices, load_backbone, load_trained, minilm_path
from dore.model.inputs import encode_document, is_byte_level
from dore.model.tiny import docred_corpus, train_tokenizer
from dore.symbolic.layout import cdr_layout, docred_layout

SPECS = ["tiny-t5", "tiny-bart", "tiny-led", "minilm"]


@pytest.fixture(scope="module")
def corpus(shared_data):
    return docred_corpus(shared_data / "redocred" / "dev_revised.json")


@pytest.fixture(scope="module")
def layout(shared_data):
    return docred_layout(load_rel_info(shared_data / "docred" / "rel_info.json"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("cache")
        mp.setenv("DORE_CACHE", str(path))
        yield path


@pytest.fixture(scope="module", params=SPECS)
def backbone(request, layout, corpus, cache):
    return load_backbone(request.param, layout, tiny_corpus=corpus)


def _ordinary_vocab_size(backbone, layout) -> int:
    return len(backbone.tokenizer) - len(layout.token_names())


def test_symbols_are_new_special_tokens(backbone, layout):
    tok, n_ordinary = backbone.tokenizer, _ordinary_vocab_size(backbone, layout)
    assert tok.convert_ids_to_tokens(backbone.code_to_id[:-1]) == layout.token_names()
    assert sorted(backbone.code_to_id[:-1]) == list(range(n_ordinary, len(tok)))
    assert len(backbone.code_to_id) == layout.n_codes and backbone.code_to_id[-1] == backbone.eos_id
    for weight in embedding_matrices(backbone.model):
        assert weight.shape[0] == len(tok)
    # A marker written in text is one token, and the next word keeps its own pieces.
    assert tok("<e_7> Paris", add_special_tokens=False)["input_ids"][0] == backbone.code_to_id[6]


def test_family_conventions(backbone):
    tok, model = backbone.tokenizer, backbone.model
    family = backbone.family
    if family == "bert2bert":
        assert (backbone.eos_id, backbone.pad_id, backbone.decoder_prefix) == (
            tok.sep_token_id, tok.pad_token_id, [tok.cls_token_id])
        assert (backbone.max_source_length, backbone.max_target_length) == (512, 512)
    else:
        assert (backbone.eos_id, backbone.pad_id) == (tok.eos_token_id, tok.pad_token_id)
        bos = [tok.bos_token_id] if family in ("bart", "led") else []
        assert backbone.decoder_prefix == [model.config.decoder_start_token_id] + bos
        expected = {"t5": (None, None), "bart": (1024, 1024), "led": (4096, 1024)}[family]
        assert (backbone.max_source_length, backbone.max_target_length) == expected
    for config in (model.config, model.generation_config):
        assert (config.decoder_start_token_id, config.pad_token_id, config.eos_token_id) == (
            backbone.decoder_prefix[0], backbone.pad_id, backbone.eos_id)


def _expected_pieces(tok, text: str) -> list[int]:
    """Independent of the code under test: plain-text tokenization, specials and bare `▁`/`Ġ` dropped."""
    ids = tok((" " + text) if is_byte_level(tok) else text, add_special_tokens=False)["input_ids"]
    return [i for i in ids if i not in tok.all_special_ids and tok.convert_ids_to_tokens(i).strip("▁Ġ")]


def test_number_and_name_initialisation(backbone, layout, corpus):
    tok, n_ordinary = backbone.tokenizer, _ordinary_vocab_size(backbone, layout)
    sources = {f"<e_{k}>": str(k) for k in range(1, layout.n_slots + 1)} | layout.symbol_names()
    assert sources["<r_na>"] == "irrelevant" and sources["<r_1>"] == "head of government"
    for weight in embedding_matrices(backbone.model):
        for name, text in sources.items():
            pieces = _expected_pieces(tok, text)
            assert pieces and max(pieces) < n_ordinary, (name, pieces)
            row = weight[tok.convert_tokens_to_ids(name)]
            torch.testing.assert_close(row, weight[pieces].mean(0), msg=f"{name} from {text!r}")
    if backbone.family != "bert2bert":  # MiniLM's ordinary rows are checked against its checkpoint
        random = load_backbone(f"tiny-{backbone.family}", layout, init="random", tiny_corpus=corpus)
        for a, b in zip(embedding_matrices(backbone.model), embedding_matrices(random.model)):
            assert torch.equal(a[:n_ordinary], b[:n_ordinary])
            assert not torch.equal(a[n_ordinary:], b[n_ordinary:])


@pytest.mark.parametrize("backbone", ["minilm"], indirect=True)
def test_minilm_keeps_its_pretrained_rows(backbone, layout):
    pretrained = load_file(minilm_path() / "model.safetensors")["embeddings.word_embeddings.weight"]
    n_ordinary = _ordinary_vocab_size(backbone, layout)
    assert n_ordinary == pretrained.shape[0] == 30522
    matrices = embedding_matrices(backbone.model)
    assert len(matrices) == 2  # encoder input; decoder input tied to the decoder's output layer
    for weight in matrices:
        assert torch.equal(weight[:n_ordinary], pretrained)


def test_seed_fixes_the_random_initialisation(layout, corpus, cache):
    state = torch.random.get_rng_state()
    a, b, c = (load_backbone("tiny-bart", layout, init="random", seed=s, tiny_corpus=corpus) for s in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    wa, wb, wc = (m.model.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_forward_pass_and_safetensors_round_trip(backbone, layout, shared_data, tmp_path):
    doc = read_docred(shared_data / "redocred" / "dev_revised.json")[0][0]
    assignment = layout.assign(doc)
    enc = encode_document(doc, assignment, backbone.tokenizer, backbone.code_to_id,
                          backbone.max_source_length or 1024)
    codes = [c for r in doc.unique_relations()[:5]
             for c in (assignment.slot_of[r.head], assignment.slot_of[r.tail], layout.relation_code(r.label))]
    labels = backbone.decoder_prefix[1:] + [backbone.code_to_id[c] for c in [*codes, layout.eos_code]]
    inputs = {"input_ids": torch.tensor([enc.input_ids]), "labels": torch.tensor([labels])}
    if backbone.family == "led":
        inputs["global_attention_mask"] = torch.zeros_like(inputs["input_ids"]).index_fill_(1, torch.tensor([0]), 1)

    backbone.model.eval()
    with torch.no_grad():
        out = backbone.model(**inputs)
    assert math.isfinite(out.loss.item()) and out.logits.shape == (1, len(labels), len(backbone.tokenizer))

    backbone.save_pretrained(tmp_path)
    weights = [p.name for p in tmp_path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".pkl")]
    assert weights and all(w.endswith(".safetensors") for w in weights), weights
    loaded = load_trained(tmp_path, layout)
    assert (loaded.family, loaded.code_to_id, loaded.decoder_prefix, loaded.eos_id, loaded.pad_id) == (
        backbone.family, backbone.code_to_id, backbone.decoder_prefix, backbone.eos_id, backbone.pad_id)
    assert (loaded.max_source_length, loaded.max_target_length) == (
        backbone.max_source_length, backbone.max_target_length)
    assert encode_document(doc, assignment, loaded.tokenizer, loaded.code_to_id,
                           backbone.max_source_length or 1024).input_ids == enc.input_ids
    loaded.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**inputs).logits, out.logits)

    with pytest.raises(DataError, match="symbol tokens"):
        load_trained(tmp_path, cdr_layout(n_chemical=200))


def test_tiny_tokenizers_are_reproducible_and_cached(corpus, tmp_path):
    for kind in ("unigram", "bpe"):
        first = train_tokenizer(kind, corpus, cache_dir=tmp_path / "a")
        second = train_tokenizer(kind, corpus, cache_dir=tmp_path / "b")
        files = sorted(p.name for p in (tmp_path / "a" / "tokenizers").glob(f"{kind}-*/*"))
        assert files == ["tokenizer.json", "tokenizer_config.json"]
        folder_a, folder_b = first.name_or_path, second.name_or_path
        for name in files:
            assert open(f"{folder_a}/{name}", "rb").read() == open(f"{folder_b}/{name}", "rb").read()
        assert train_tokenizer(kind, corpus, cache_dir=tmp_path / "a").name_or_path == folder_a
        assert train_tokenizer(kind, corpus[:50], cache_dir=tmp_path / "a").name_or_path != folder_a
        assert 1900 <= len(first) <= 2000
