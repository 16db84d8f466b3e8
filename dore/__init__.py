"""dore: generative document-level relation extraction (DORE) and the system that trains, evaluates and serves it."""

__version__ = "0.1.0"
