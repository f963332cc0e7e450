"""training stage of adu_perception."""
