"""Near-duplicate detection against evaluation sets, and the CLIP paper's overlap report."""
