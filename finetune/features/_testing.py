"""The tiny full-protocol network of the features examples: :class:`finetune.testing.TinyNet`."""

from ..testing import TinyNet

__all__ = ["TinyNet"]
