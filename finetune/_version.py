"""The version of finetune."""

__version__ = "0.1.0"
