"""From the run table to leaderboards: pairing, bootstrap intervals, plots, markdown."""
