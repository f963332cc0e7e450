"""export stage of adu_perception."""
