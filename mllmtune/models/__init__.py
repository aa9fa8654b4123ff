"""The model bundle: a model, its processor and its module groups."""
