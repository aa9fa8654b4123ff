"""Training and evaluation data: prompts and collators, file and hub sources, readers, held-out splits."""
