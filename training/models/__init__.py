"""Architectures, registered by name. Importing this package registers all of them."""

from tilecast.training.models import classifiers, generators, segmenters
from tilecast.training.models.registry import create_model, list_models, register_model

__all__ = ["classifiers", "create_model", "generators", "list_models", "register_model", "segmenters"]
