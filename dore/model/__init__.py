"""DORE backbones: loading seq2seq models, symbol tokens, marked inputs."""
