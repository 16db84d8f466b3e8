"""Marked source sequences: exact word pieces around markers, nesting, truncation."""

import pytest

from dore.data.docred import load_rel_info, read_docred
from dore.data.model import Document, Entity, Mention
from dore.model.backbone import load_backbone
from dore.model.inputs import encode_document, is_byte_level, special_frame, word_pieces
from dore.model.tiny import docred_corpus
from dore.symbolic.layout import docred_layout

SPECS = ["tiny-t5", "tiny-bart", "tiny-led", "minilm"]
N_DOCS = 100


@pytest.fixture(scope="module")
def layout(shared_data):
    return docred_layout(load_rel_info(shared_data / "docred" / "rel_info.json"))


@pytest.fixture(scope="module")
def docs(shared_data):
    return read_docred(shared_data / "redocred" / "dev_revised.json")[0][:N_DOCS]


@pytest.fixture(scope="module", params=SPECS)
def backbone(request, layout, shared_data, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DORE_CACHE", str(tmp_path_factory.mktemp("cache")))
        corpus = docred_corpus(shared_data / "redocred" / "dev_revised.json")
        yield load_backbone(request.param, layout, tiny_corpus=corpus)


def _natural_ids(tokenizer, words):
    """The unmarked document as plain text, tokenized the ordinary way (a leading space for
    byte-level BPE, so the first word is a word after a space like all the others)."""
    text = " ".join(words)
    return tokenizer((" " + text) if is_byte_level(tokenizer) else text)["input_ids"]


def _doc(tokens: str, spans: list[list[tuple[int, int]]]) -> Document:
    words = tokens.split()
    entities = [Entity(mentions=[Mention(start=s, end=e, text=" ".join(words[s:e])) for s, e in ms]) for ms in spans]
    return Document(doc_id="hand", tokens=words, sentences=[(0, len(words))], entities=entities).check()


def test_markers_leave_every_word_its_own_pieces(backbone, layout, docs):
    """docs/method.md §3: stripping the marker ids gives back the unmarked tokenization, exactly."""
    tok, markers = backbone.tokenizer, set(backbone.code_to_id[:-1])
    not_words = markers | set(tok.all_special_ids)
    space = {"t5": "▁", "bart": "Ġ", "led": "Ġ"}.get(backbone.family)
    n_markers = 0
    for doc in docs:
        enc = encode_document(doc, layout.assign(doc), tok, backbone.code_to_id, None)
        assert [i for i in enc.input_ids if i not in markers] == _natural_ids(tok, doc.tokens), doc.doc_id
        assert not enc.truncated and enc.lost_entities == []
        assert enc.n_tokens_before_truncation == len(enc.input_ids)
        # The word after a marker keeps its space-prefixed piece (the 4.x BART tokenizer lost it).
        pieces = tok.convert_ids_to_tokens(enc.input_ids)
        for i, (prev, cur) in enumerate(zip(enc.input_ids, enc.input_ids[1:])):
            if prev in markers and cur not in not_words:
                n_markers += 1
                if space:
                    assert pieces[i + 1].startswith(space), (doc.doc_id, pieces[i - 2:i + 3])
        mentions = sum(len({(m.start, m.end) for m in doc.entities[e].mentions}) for e in layout.assign(doc).slot_of)
        assert sum(i in markers for i in enc.input_ids) == 2 * mentions
    assert n_markers > 1000


def test_special_tokens_frame_the_sequence(backbone):
    tok = backbone.tokenizer
    expected = {"t5": ([], [tok.eos_token_id]), "bart": ([tok.bos_token_id], [tok.eos_token_id]),
                "led": ([tok.bos_token_id], [tok.eos_token_id]),
                "bert2bert": ([tok.cls_token_id], [tok.sep_token_id])}[backbone.family]
    assert special_frame(tok) == expected
    assert expected[1] == [backbone.eos_id]


def test_nested_and_shared_spans_nest_properly(backbone):
    tok = backbone.tokenizer
    # entity 0 [5,8) holds entity 1 [6,8); entity 2 has a repeated and a nested mention; 3 and 4 share a span
    doc = _doc("Ada Lovelace wrote notes on the Analytical Engine in 1843 .",
               [[(5, 8)], [(6, 8)], [(0, 2), (0, 1), (0, 2)], [(9, 10)], [(9, 10)]])
    layout = docred_layout({"P1": "one"}, n_slots=5)
    assignment = layout.assign(doc)
    assert assignment.slot_of == {2: 0, 0: 1, 1: 2, 3: 3, 4: 4}
    code_to_id = [tok.convert_tokens_to_ids(n) for n in layout.token_names()] + [backbone.eos_id]
    m = code_to_id[:5]
    w = word_pieces(tok, doc.tokens)
    prefix, suffix = special_frame(tok)
    expected = (prefix + [m[0], m[0]] + w[0] + [m[0]] + w[1] + [m[0]] + w[2] + w[3] + w[4]
                + [m[1]] + w[5] + [m[2]] + w[6] + w[7] + [m[2], m[1]] + w[8]
                + [m[3], m[4]] + w[9] + [m[4], m[3]] + w[10] + suffix)
    assert encode_document(doc, assignment, tok, code_to_id, None).input_ids == expected


TEXT = ("The river flows north past the old mill and the river meets the cold sea near the small town "
        "of Port Ellen where the ferry from the mainland docks every morning")


def _truncation_case(tok, eos_id):
    doc = _doc(TEXT, [[(1, 2), (10, 11)], [(6, 8)], [(20, 22)]])  # entity 2 only at "Port Ellen"
    layout = docred_layout({"P1": "one"}, n_slots=3)
    code_to_id = [tok.convert_tokens_to_ids(n) for n in layout.token_names()] + [eos_id]
    full = encode_document(doc, layout.assign(doc), tok, code_to_id, None)
    return doc, layout.assign(doc), code_to_id, full


def test_truncation_keeps_the_head_and_reports_lost_entities(backbone):
    tok = backbone.tokenizer
    doc, assignment, code_to_id, full = _truncation_case(tok, backbone.eos_id)
    prefix, suffix = special_frame(tok)
    port = full.input_ids.index(code_to_id[2])
    enc = encode_document(doc, assignment, tok, code_to_id, port)
    assert enc.truncated and enc.n_tokens_before_truncation == len(full.input_ids)
    assert enc.lost_entities == [2]
    assert len(enc.input_ids) == port and enc.input_ids[-len(suffix):] == suffix
    assert full.input_ids[:port - len(suffix)] == enc.input_ids[:-len(suffix)]
    # A limit that would end inside "<e_3> Port Ellen <e_3>" cuts before its start marker instead.
    inside = encode_document(doc, assignment, tok, code_to_id, port + 1 + len(suffix) + 1)
    assert inside.input_ids == full.input_ids[:port] + suffix and inside.lost_entities == [2]
    # Only the head is kept: with room for the first word only, every entity is lost.
    head = encode_document(doc, assignment, tok, code_to_id, len(prefix) + len(suffix) + 1)
    assert head.lost_entities == [0, 1, 2] and head.input_ids == prefix + full.input_ids[len(prefix):][:1] + suffix
    with pytest.raises(ValueError, match="no room"):
        encode_document(doc, assignment, tok, code_to_id, len(prefix) + len(suffix) - 1)


def test_truncated_real_documents_keep_markers_paired(backbone, layout, docs):
    tok, markers = backbone.tokenizer, set(backbone.code_to_id[:-1])
    prefix, suffix = special_frame(tok)
    n_lost = 0
    for doc in docs:
        assignment = layout.assign(doc)
        full = encode_document(doc, assignment, tok, backbone.code_to_id, None)
        enc = encode_document(doc, assignment, tok, backbone.code_to_id, 128)
        assert len(enc.input_ids) <= 128 and enc.truncated == (len(full.input_ids) > 128)
        body = enc.input_ids[len(prefix):len(enc.input_ids) - len(suffix)]
        assert full.input_ids[len(prefix):len(prefix) + len(body)] == body
        counts = {i: body.count(i) for i in markers if i in body}
        assert all(c % 2 == 0 for c in counts.values()), doc.doc_id
        absent = sorted(e for e, s in assignment.slot_of.items() if backbone.code_to_id[s] not in counts)
        assert enc.lost_entities == absent
        n_lost += len(absent)
    assert n_lost > 0


def test_chunked_encoding_keeps_every_mention_and_frames_each_window(backbone, layout, docs):
    """Fusion-in-Decoder inputs: windows of `chunk_length` with their own special tokens, padded,
    cut where no mention is open; nothing is lost however long the document."""
    doc = max(docs, key=lambda d: len(d.tokens))
    assignment = layout.assign(doc)
    prefix, suffix = special_frame(backbone.tokenizer)
    enc = encode_document(doc, assignment, backbone.tokenizer, backbone.code_to_id, None, chunk_length=64,
                          pad_id=backbone.pad_id)
    whole = encode_document(doc, assignment, backbone.tokenizer, backbone.code_to_id, None)
    assert enc.chunks > 3 and len(enc.input_ids) == 64 * enc.chunks and not enc.truncated and not enc.lost_entities
    body = []
    for c in range(enc.chunks):
        window = [t for t in enc.input_ids[64 * c: 64 * (c + 1)] if t != backbone.pad_id]
        assert window[: len(prefix)] == prefix and window[len(window) - len(suffix):] == suffix
        body += window[len(prefix): len(window) - len(suffix)]
    assert prefix + body + suffix == whole.input_ids  # the windows partition the marked document
    capped = encode_document(doc, assignment, backbone.tokenizer, backbone.code_to_id, 128, chunk_length=64,
                             pad_id=backbone.pad_id)
    assert capped.chunks == 2 and capped.truncated and capped.lost_entities


def test_a_mention_past_the_first_window_reaches_the_decoder(layout, docs):
    """Perturbing a marker in the last window changes the decoder's output only with chunking
    (truncated at one window, the decoder never sees it)."""
    import torch

    from dore.model.inputs import encode_chunks

    bb = load_backbone("tiny-bart", layout, seed=0)
    model = bb.model.eval()
    doc = max(docs, key=lambda d: len(d.tokens))
    enc = encode_document(doc, layout.assign(doc), bb.tokenizer, bb.code_to_id, None, chunk_length=64,
                          pad_id=bb.pad_id)
    ids = torch.tensor([enc.input_ids])
    markers = [i for i, t in enumerate(enc.input_ids) if t in set(bb.code_to_id) and i >= 64 * (enc.chunks - 1)]
    assert markers and markers[0] > 64
    changed = ids.clone()
    changed[0, markers[0]] = bb.code_to_id[(bb.code_to_id.index(int(ids[0, markers[0]])) + 1) % layout.n_slots]

    def decoder_logits(input_ids, chunk_length):
        mask = (input_ids != bb.pad_id).long()
        hidden = encode_chunks(model.get_encoder(), input_ids, mask, chunk_length)
        start = torch.tensor([bb.decoder_prefix])
        return model(encoder_outputs=(hidden,), attention_mask=mask, decoder_input_ids=start).logits

    with torch.no_grad():
        assert not torch.allclose(decoder_logits(ids, 64), decoder_logits(changed, 64))
        first = ids[:, :64]
        assert torch.equal(decoder_logits(first, None), decoder_logits(changed[:, :64], None))
        # each window is encoded on its own: the first window's states do not depend on the rest
        hidden = encode_chunks(model.get_encoder(), ids, (ids != bb.pad_id).long(), 64)
        alone = model.get_encoder()(input_ids=first, attention_mask=(first != bb.pad_id).long()).last_hidden_state
        assert torch.allclose(hidden[:, :64], alone, atol=1e-5)


def test_minilm_reads_a_scirex_mention_past_position_512(shared_data):
    """The embedded default on a real SciREX document: a marker in the third 512-token window
    changes what the decoder sees."""
    import torch

    from dore.data.scirex import read_scirex
    from dore.model.inputs import encode_chunks
    from dore.symbolic.layout import default_layout

    doc = read_scirex(shared_data / "scirex" / "dev.jsonl")[0][0]
    layout = default_layout([doc], "scirex", None)
    bb = load_backbone("minilm", layout, seed=0)
    enc = encode_document(doc, layout.assign(doc), bb.tokenizer, bb.code_to_id, 512 * 3, chunk_length=512,
                          pad_id=bb.pad_id)
    ids = torch.tensor([enc.input_ids])
    symbols = set(bb.code_to_id)
    marker = next(i for i, t in enumerate(enc.input_ids) if t in symbols and i >= 1024)
    changed = ids.clone()
    changed[0, marker] = next(t for t in bb.code_to_id if t != int(ids[0, marker]) and t in symbols)
    model = bb.model.eval()

    def cross_attended(input_ids):
        mask = (input_ids != bb.pad_id).long()
        hidden = encode_chunks(model.get_encoder(), input_ids, mask, 512)
        return model(encoder_outputs=(hidden,), attention_mask=mask,
                     decoder_input_ids=torch.tensor([bb.decoder_prefix])).logits

    with torch.no_grad():
        assert not torch.allclose(cross_attended(ids), cross_attended(changed))
