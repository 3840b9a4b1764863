"""fit-unlearn: robust continual unlearning for Hugging Face causal language models."""

__version__ = "0.1.0"

__all__ = ["__version__"]
