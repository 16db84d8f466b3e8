"""Scorers with the official semantics of each benchmark (evaluation.md); scores in percent."""
