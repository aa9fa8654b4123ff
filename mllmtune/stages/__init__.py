"""Stages decide how a model trains (SFT, GRPO; `registry.py`); strategies decide what trains."""
