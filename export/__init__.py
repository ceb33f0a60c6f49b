"""Export: trained models -> ONNX with per-pixel pre/postprocessing baked in, checked, into a repository.

Needs the `export` extra (PyTorch, onnx). Kept light at import so `tilecast --help` works without torch.
"""
