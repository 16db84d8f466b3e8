"""Entity recognition for plain text: mention detection with types and coreference on one encoder
(`EntityRecognizer`; the network in `model`, the coreference backends in `coref`)."""

from dore.entities.recognizer import EntityRecognizer

__all__ = ["EntityRecognizer"]
