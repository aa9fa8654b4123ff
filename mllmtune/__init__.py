"""mllmtune: tune multimodal LLMs and measure what the tuning costs."""

__version__ = "0.1.0"
