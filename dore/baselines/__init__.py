"""The two baselines the paper compares DORE with, on DORE's backbone, inputs, data and budget.

- `lexical`: lexical generation (REBEL / seq2rel style): relations written as text, parsed back
  to entities by string matching.
- `classifier`: ATLOP-style classification on the backbone's encoder (logsumexp mention pooling,
  localized context pooling, group bilinear classifier, adaptive-threshold loss).
"""
