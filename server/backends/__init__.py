"""Engines behind one protocol (`base.Backend`); `choose.open_instances` picks one per model version."""
