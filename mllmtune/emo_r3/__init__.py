"""EMO-R3: Structured Emotional Thinking (templates and parsers) and the rewards of its GRPO stage."""
