"""Training: generators (pix2pix), and later CycleGAN, U-Net segmenters and patch classifiers.

Needs the `train` extra (PyTorch). Kept light at import so `tilecast --help` works without torch.
"""
