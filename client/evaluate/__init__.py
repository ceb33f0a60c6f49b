"""Scoring outputs against ground truth: instance and semantic label images, and classifier heat maps against
annotation masks. Pure NumPy (the client extra has no scipy); label images are read in bands, so memory is
bounded by one band and the number of objects, never by the image.

`contingency` counts (prediction id, truth id) pixel pairs band by band; `instances`, `semantic` and
`heatmap` turn those counts into scores; `ranking` holds ROC AUC and average precision.
"""
