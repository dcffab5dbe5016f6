"""aloe: the Aloe Family recipe for open healthcare LLMs."""

__version__ = "0.1.0"
