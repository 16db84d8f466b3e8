"""Constrained generation of symbol sequences: the constraint, the symbol head, generation."""
