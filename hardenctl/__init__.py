"""hardenctl: make timm image classifiers robust, and measure robustness you can trust."""
__version__ = "0.1.0"

from .api import evaluate, harden, load_data, load_model  # noqa: E402
from .evaluate import EvalConfig  # noqa: E402
from .report import Report  # noqa: E402

__all__ = ["__version__", "evaluate", "harden", "load_data", "load_model", "EvalConfig", "Report"]
