"""The exceptions finetune raises.

Every error the library raises on purpose is a :class:`FinetuneError`. Each
subclass also inherits the built-in exception a Python user would expect
(``ValueError``, ``KeyError``, ``FileNotFoundError``, ...), so ordinary
``except ValueError:`` clauses keep working.

Messages say what was wrong, what was received and how to fix it::

    The 'decay' parameter of LayerLRPolicy must be in (0, 1]. Got 1.5 instead.

Hierarchy::

    FinetuneError
    ├── ConfigError (ValueError)             a parameter value is not allowed
    │   └── UnknownNameError (KeyError)      a name that is not registered
    ├── MissingFileError (FileNotFoundError) a path that does not exist
    ├── DataError (ValueError)               input data is malformed
    │   ├── ImageDecodeError                 an image cannot be decoded
    │   │   └── ImageTooLargeError           an image declares more pixels than allowed
    │   ├── ListFormatError                  a .lst / .csv line is malformed
    │   ├── RecordFormatError                a .rec / .idx file is malformed
    │   └── CheckpointError                  a training checkpoint is truncated or malformed
    ├── ModelError (ValueError)              a network cannot be built or loaded
    │   ├── ShapeError                       an array or layer shape does not fit
    │   ├── CaffeFormatError                 a prototxt / caffemodel is malformed
    │   ├── UnsupportedLayerError            a Caffe layer type we cannot convert
    │   ├── UnsafeFileError                  a weights file tries to run code
    │   ├── UnsafePathError                  a saved model names a file outside its folder
    │   └── ModelProtocolError               an object does not meet the model protocol
    ├── DeviceError (RuntimeError)           a device that is not available
    ├── WriteError (OSError)                 an output cannot be written (disk full, ...)
    ├── MissingExtraError (ImportError)      an optional dependency is not installed
    └── TrainingError (RuntimeError)         training cannot go on
        └── NonFiniteLossError               the loss became NaN or infinite
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CaffeFormatError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DeviceError",
    "FinetuneError",
    "ImageDecodeError",
    "ImageTooLargeError",
    "ListFormatError",
    "MissingExtraError",
    "MissingFileError",
    "MissingWeightsError",
    "MixedOutputError",
    "ModelError",
    "ModelProtocolError",
    "NonFiniteLossError",
    "OutputBusyError",
    "OutputExistsError",
    "RecordFormatError",
    "ShapeError",
    "TrainingError",
    "UnknownNameError",
    "UnsafeFileError",
    "UnsafePathError",
    "UnsupportedLayerError",
    "WriteError",
]


class FinetuneError(Exception):
    """Base class of every error raised by finetune on purpose."""


class ConfigError(FinetuneError, ValueError):
    """A parameter has a value that is not allowed."""


class UnknownNameError(ConfigError, KeyError):
    """A name (backbone, layer, pooling, optimizer, ...) that is not known.

    Parameters
    ----------
    kind : str
        What was looked up, e.g. ``"backbone"``.
    name : str
        The name that was given.
    choices : iterable of str
        The names that exist; the closest ones are suggested.
    """

    def __init__(self, kind: str, name: str, choices: Iterable[str]):
        self.kind = kind
        self.name = name
        self.choices = sorted(str(c) for c in choices)
        super().__init__(self._message())

    def _message(self) -> str:
        close = difflib.get_close_matches(str(self.name), self.choices, n=3, cutoff=0.5)
        msg = f"Unknown {self.kind} {self.name!r}."
        if close:
            msg += " Did you mean " + " or ".join(repr(c) for c in close) + "?"
        shown = ", ".join(self.choices[:40])
        if len(self.choices) > 40:
            shown += f", ... ({len(self.choices) - 40} more)"
        plural = self.kind + ("es" if self.kind.endswith(("s", "sh", "ch", "x")) else "s")
        msg += f" Known {plural}: {shown}."
        return msg

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class MissingFileError(FinetuneError, FileNotFoundError):
    """A file or folder that is needed does not exist."""


class DataError(FinetuneError, ValueError):
    """Input data is malformed."""


class ImageDecodeError(DataError):
    """An image file cannot be decoded (unreadable, truncated, not an image)."""


class ListFormatError(DataError):
    """A line of an image list (``.lst`` or ``.csv``) is malformed."""


class RecordFormatError(DataError):
    """A RecordIO file (``.rec`` / ``.idx``) is truncated or malformed."""


class CheckpointError(DataError):
    """A training checkpoint (``.ckpt``) is truncated, malformed or does not fit the Trainer."""


class ImageTooLargeError(ImageDecodeError):
    """An image declares more pixels than ``finetune.data.MAX_IMAGE_PIXELS`` allows."""


class ModelError(FinetuneError, ValueError):
    """A network cannot be built, converted, loaded or saved."""


class ShapeError(ModelError):
    """An array or a layer has a shape that does not fit."""


class CaffeFormatError(ModelError):
    """A Caffe ``.prototxt`` or ``.caffemodel`` is malformed."""


class UnsupportedLayerError(ModelError):
    """A Caffe layer type that cannot be converted."""


class UnsafeFileError(ModelError):
    """A weights file tries to construct objects other than tensors."""


class UnsafePathError(ModelError):
    """A model directory's config.json (or an earlier deployment's deploy.json) names a file outside its folder."""


class ModelProtocolError(ModelError, TypeError):
    """An object does not meet the model protocol; :attr:`failures` lists what failed.

    Raised by :func:`finetune.testing.check_model`.
    """

    def __init__(self, message: str, failures=()):
        super().__init__(message)
        self.failures = list(failures)


class DeviceError(FinetuneError, RuntimeError):
    """A device (e.g. a GPU) was asked for but is not available."""


class WriteError(FinetuneError, OSError):
    """An output file cannot be written (disk full, file too large, no permission).

    The previous content of the file, if any, is left intact. ``errno`` and
    ``filename`` are those of the underlying :class:`OSError`.
    """

    def __str__(self) -> str:  # the message, not OSError's "[Errno N] None: 'file'" once errno is set
        return str(self.args[0]) if self.args else super().__str__()


class MissingExtraError(FinetuneError, ImportError):
    """A feature needs an optional dependency that is not installed (the message names the extra)."""


class TrainingError(FinetuneError, RuntimeError):
    """Training cannot continue."""


class NonFiniteLossError(TrainingError):
    """The training loss became NaN or infinite."""


class _NamesFile:
    """An error about one file: ``str(err)`` is the message and ``err.filename`` the file (also on ``OSError``s)."""

    def __init__(self, message: str, filename=None):
        super().__init__(message)
        self.filename = filename

    def __str__(self) -> str:  # the message, not OSError's "[Errno None] None: 'file'" once filename is set
        return str(self.args[0]) if self.args else super().__str__()


class OutputExistsError(_NamesFile, ConfigError, FileExistsError):
    """An output would replace a file or folder finetune did not write; ``filename`` names what is in the way."""


class OutputBusyError(_NamesFile, FinetuneError, BlockingIOError):
    """Another finetune process is writing the output folder; ``filename`` names it."""


class MixedOutputError(_NamesFile, DataError):
    """The parts of a multi-file output (``.rec`` + ``.idx`` + class names, a folder) come from different writes.

    ``filename`` names the part that does not belong.
    """


class MissingWeightsError(ModelError, MissingFileError):
    """The pretrained weights of a zoo architecture are not on this machine and cannot be fetched.

    The message says where they come from and how to get them, or to pass
    ``weights=None`` (``--weights none``) for random initialisation.
    """


def check_choice(owner: str, param: str, value, choices: Iterable) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices`` (of the same type: ``1`` is not ``True``).

    Parameters
    ----------
    owner : str
        The function or class the parameter belongs to.
    param : str
        The parameter name.
    value : object
        The value that was given.
    choices : iterable
        The allowed values.
    """
    from ._constraints import Options, show

    choices = list(choices)
    if not Options(choices).is_satisfied_by(value):
        allowed = ", ".join(repr(c) for c in choices)
        raise ConfigError(
            f"The {param!r} parameter of {owner} must be one of {allowed}. Got {show(value)} instead."
        )


def check_range(owner: str, param: str, value, low=None, high=None, *,
                low_open: bool = False, high_open: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite number with ``low <= value <= high``.

    NaN, infinities, bools and non-numbers never pass (see :class:`finetune._validation.Interval`).

    Parameters
    ----------
    owner, param : str
        Where the value comes from, for the message.
    value : float
        The value to check.
    low, high : float or None
        Bounds; ``None`` means unbounded.
    low_open, high_open : bool
        Exclude the bound itself.
    """
    from numbers import Real

    from ._constraints import Interval, magnitude_note, show

    closed = {(False, False): "both", (False, True): "left", (True, False): "right", (True, True): "neither"}
    interval = Interval(Real, low, high, closed=closed[(low_open, high_open)])
    if not interval.is_satisfied_by(value):
        what = "" if Interval(Real).is_satisfied_by(value) else "a finite number "
        raise ConfigError(
            f"The {param!r} parameter of {owner} must be {what}in {interval.bounds()}. Got {show(value)} instead"
            f"{magnitude_note(value)}."
        )
