"""One run: training and zero-shot scoring, the run record and the results folder, provenance, export."""
