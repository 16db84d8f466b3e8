from dore.data.model import DataError, Document, Entity, Mention, Relation, read_jsonl, write_jsonl
from dore.data.report import ReaderReport

__all__ = ["DataError", "Document", "Entity", "Mention", "Relation", "ReaderReport", "read_jsonl", "write_jsonl"]
