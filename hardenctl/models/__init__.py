"""Models: checkpoint I/O, the metadata that travels with a model, and the normalised classifier.

``metadata`` parses what exporters write (no torch), ``checkpoint`` reads files without unpickling code,
``classifier`` is the [0, 1]-pixel wrapper every attack sees, ``load`` builds timm models and saves them.
"""
from .checkpoint import TORCH_SUFFIXES, read_checkpoint
from .classifier import ImageClassifier, ModelInfo, wrap_model
from .data_config import DataConfig, resolve_data_config
from .load import create_timm_model, load_model, resolve_device, save_model, timm_cfg, write_config_json
from .metadata import parse_metadata
from .sources import ModelSource, resolve_source

__all__ = ["DataConfig", "ImageClassifier", "ModelInfo", "ModelSource", "TORCH_SUFFIXES", "create_timm_model", "load_model",
           "parse_metadata", "read_checkpoint", "resolve_data_config", "resolve_device", "resolve_source", "save_model",
           "timm_cfg", "wrap_model", "write_config_json"]
