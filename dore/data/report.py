"""What a reader saw: counts and every documented quirk it applied (nothing dropped silently)."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, Field


class ReaderReport(BaseModel):
    file: str
    documents: int = 0
    entities: int = 0
    mentions: int = 0
    relations: int = 0
    counts: Counter = Field(default_factory=Counter, description="named counts, e.g. relations per label")
    quirks: Counter = Field(default_factory=Counter, description="documented data quirks and how often each policy applied")
    examples: dict[str, list[str]] = Field(default_factory=dict, description="a few document ids per quirk")

    def quirk(self, name: str, doc_id: str, n: int = 1) -> None:
        self.quirks[name] += n
        ex = self.examples.setdefault(name, [])
        if len(ex) < 5 and doc_id not in ex:
            ex.append(doc_id)

    def add_document(self, doc) -> None:
        self.documents += 1
        self.entities += len(doc.entities)
        self.mentions += sum(len(e.mentions) for e in doc.entities)
        self.relations += len(doc.relations)
        for rel in doc.relations:
            self.counts[f"relation:{rel.label}"] += 1
