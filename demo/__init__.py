"""demo stage of adu_perception."""
