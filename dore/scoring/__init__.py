"""Scorers with the official semantics of each benchmark (docs/evaluation.md); scores in percent."""
