"""Tiny hand-made documents for unit tests."""

from dore.data.model import Document, Entity, Mention, Relation


def make_doc(positions, relations=(), types=None, doc_id="d0", excluded=()):
    """positions[i] = list of (start, end) of entity i's mentions; relations = (args..., label)."""
    n_tok = max(e for spans in positions for _, e in spans) + 1 if positions else 1
    ents = [Entity(mentions=[Mention(start=s, end=e, text=f"w{s}") for s, e in spans],
                   type=(types[i] if types else None)) for i, spans in enumerate(positions)]
    rels = [Relation(args=tuple(r[:-1]), label=r[-1]) for r in relations]
    return Document(doc_id=doc_id, tokens=[f"w{i}" for i in range(n_tok)], sentences=[(0, n_tok)],
                    entities=ents, relations=rels, excluded=list(excluded))
