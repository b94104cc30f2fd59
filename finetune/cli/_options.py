"""The options several ``finetune`` commands share, defined once.

A shared option has one spelling, one help text and one default everywhere,
and that spelling and default are those of the library parameter it sets
(``--batch-size`` is ``batch_size=32`` of :class:`~finetune.Trainer`,
:class:`~finetune.Predictor`, :class:`~finetune.FeatureExtractor`, ...);
:data:`SHARED` records which API parameters each option stands for, and a
test checks that their defaults agree. The one exception is the output:
every command writes its result to ``--out`` (a file, a folder or a prefix,
``out_dir=`` / ``prefix`` / ``path`` in the API).

The settings of :class:`~finetune.RetrievalIndex` (``--method``,
``--refine``, ...) are declared here too, as one group
(:func:`add_index_options`), so that the same test holds them to the
constructor's defaults.

Spellings that were renamed keep working as deprecated aliases
(:func:`add_alias`, :func:`add_positional_out`): they set the same value and
print one ``warning:`` line on stderr naming the new spelling.

argparse has no notion of a deprecated option (Python 3.13's
``deprecated=True`` is not available on 3.11), hence the small actions here.
"""

from __future__ import annotations

import argparse
import os
import sys
from numbers import Integral, Real
from typing import NamedTuple

from .._constraints import magnitude_note
from .._outputs import name_example
from .._validation import Interval, describe, satisfies

__all__ = ["INDEX_OPTIONS", "SHARED", "Parser", "add_alias", "add_index_options", "add_positional_out", "add_shared",
           "count", "ctx_of", "file_name", "index_kwargs", "input_size", "number", "prefix", "weights"]


def number(kind=Real, low=None, high=None, closed: str = "both"):
    """An argparse ``type``: a number of ``kind`` (``Real`` or ``Integral``) in an interval, checked as it is parsed.

    NaN, infinities and overflowing values (``1e400``) are refused like any
    out-of-range value, as argparse's one-line usage error naming the flag.

    Examples
    --------
    >>> number(Real, 0, None, closed="neither")("0.1")
    0.1
    >>> number(Real, 0, None, closed="neither")("nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a finite float in (0, inf). Got 'nan'.
    """
    constraint = Interval(kind, low, high, closed=closed)

    def parse(text: str):
        try:
            value = int(text) if kind is Integral else float(text)
        except ValueError:
            value = text
        if not satisfies(value, constraint):
            raise argparse.ArgumentTypeError(f"must be {describe(constraint)}. Got {text!r}{magnitude_note(value)}.")
        return value

    parse.__name__ = "int" if kind is Integral else "float"  # argparse names the type in some messages
    return parse


def count(low: int = 0):
    """An argparse ``type``: a whole number ``>= low`` (``--workers``: 0, ``--batch-size``: 1)."""
    return number(Integral, low, None)


def prefix(text: str) -> str:
    """``--out PREFIX``: a folder and a name stem (``data/train`` writes ``data/train.rec``, ...).

    A path without a name (``data/``, ``.``, ``""``) would write hidden files
    (``data/.rec``): refused as the usage error naming the flag.

    Examples
    --------
    >>> prefix("data/train")
    'data/train'
    >>> prefix("data/")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: needs a name after the folder, e.g. 'data/train'. Got 'data/'.
    """
    example = name_example(text, "train")
    if example is not None:
        raise argparse.ArgumentTypeError(f"needs a name after the folder, e.g. {example!r}. Got {text!r}.")
    return text


def file_name(text: str) -> str:
    """``--out FILE``: a path that names a file (``out/bad.csv``), not a folder (``out/``, ``.``, ``""``).

    A path ending in a folder separator would become a hidden file
    (``out/.npy``) or a "Not a directory" error: refused as the usage error
    naming the flag. Every file ``--out`` takes this type (see :func:`add_shared`).

    Examples
    --------
    >>> file_name("out/bad.csv")
    'out/bad.csv'
    >>> file_name("out/")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: needs a file name after the folder, e.g. 'out/result'. Got 'out/'.
    """
    example = name_example(text)
    if example is not None:
        raise argparse.ArgumentTypeError(f"needs a file name after the folder, e.g. {example!r}. Got {text!r}.")
    return text


def name_part(text: str) -> str:
    """A word that becomes part of a file name (``split --part-names``): no folder, no control character.

    Examples
    --------
    >>> name_part("train")
    'train'
    >>> name_part("../x")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a plain name (no '/', not empty, '.' or '..', no control characters). Got '../x'.
    """
    if (not text or text in (".", "..") or "/" in text or (os.altsep and os.altsep in text)
            or any(ord(c) < 32 or c == "\x7f" for c in text)):
        raise argparse.ArgumentTypeError("must be a plain name (no '/', not empty, '.' or '..', no control "
                                         f"characters). Got {text!r}.")
    return text


def weights(text: str):
    """``--weights``: ``imagenet`` (the pretrained weights, the default), ``none`` (random) or a weights file.

    Examples
    --------
    >>> weights("none") is None, weights("ImageNet"), weights("resnet.params")
    (True, 'imagenet', 'resnet.params')
    """
    value = text.strip()
    if value.lower() in ("none", "imagenet"):
        return None if value.lower() == "none" else "imagenet"
    if not value:
        raise argparse.ArgumentTypeError("must be 'imagenet', 'none' or a weights file. Got an empty value.")
    return value


def input_size(text: str):
    """``--input-size``: ``auto`` or a positive number of pixels."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a positive number of pixels. Got {text!r}.")
    return value


class Option(NamedTuple):
    """One shared option: its flag, ``add_argument`` keywords and the API parameters it sets."""

    flag: str
    kwargs: dict
    api: tuple  # "module:Callable" whose parameter ``dest`` has the same default


SHARED = {
    "ctx": Option("--ctx", dict(default=None, metavar="CTX",
                               help="devices, e.g. cpu, 'cpu*2', 'gpu:0,1' (default: the current device)"),
                  ("finetune.train:Trainer", "finetune.train:Recipe.fit", "finetune.train:lr_find",
                   "finetune.use:Predictor", "finetune.use:evaluate", "finetune.features:FeatureExtractor")),
    "workers": Option("--workers", dict(type=count(0), default=None, metavar="N",
                                       help="processes that read and decode images (default: from the core count)"),
                      ("finetune.train:TrainConfig", "finetune.train:Recipe.fit", "finetune.use:Predictor",
                       "finetune.data:pack", "finetune.data:check", "finetune.data:MeanImage.compute")),
    "batch_size": Option("--batch-size", dict(type=count(1), default=32, metavar="N",
                                             help="images per batch, split over the --ctx devices (default: 32)"),
                         ("finetune.train:TrainConfig", "finetune.train:lr_find",
                          "finetune.use:Predictor", "finetune.use:evaluate", "finetune.features:FeatureExtractor")),
    "seed": Option("--seed", dict(type=number(Integral, 0, 2 ** 32 - 1), default=0, help="random seed (default: 0)"),
                   ("finetune.train:TrainConfig", "finetune.train:Recipe", "finetune.train:lr_find",
                    "finetune.data:ImageList.split", "finetune.data:balance",
                    "finetune.data:write_fashion_mnist_folder")),
    "input_size": Option("--input-size", dict(type=input_size, default="auto", metavar="PIXELS",
                                             help="square input size, or auto (default: auto, the recipe's choice "
                                                  "from the backbone and the images)"),
                         ("finetune.train:Recipe",)),
    "num_classes": Option("--num-classes", dict(type=count(1), default=None, metavar="N",
                                               help="number of classes (default: from the records' class names)"),
                          ("finetune.models:Backbone.from_zoo",)),
    "weights": Option("--weights", dict(type=weights, default="imagenet", metavar="WEIGHTS",
                                       help="for a zoo name: imagenet (its pretrained weights), none (random "
                                            "initialisation) or a .params / .pth file (default: imagenet)"),
                      ("finetune.models:create_model", "finetune.models:Backbone.from_zoo")),
    "progress": Option("--no-progress", dict(dest="progress", action="store_false", default=True,
                                            help="no progress bars"),
                       ("finetune.train:TrainConfig", "finetune.train:Recipe.fit", "finetune.train:lr_find")),
    "tta": Option("--tta", dict(action=argparse.BooleanOptionalAction, default=None,
                                help="mirror test-time augmentation: average each image's logits with its "
                                     "mirror's (twice the compute); --no-tta: never (default: what the model "
                                     "records, e.g. on for a model the recipe trained)"),
                  ("finetune.use:Predictor", "finetune.use:evaluate")),
    "json": Option("--json", dict(action="store_true", default=False,
                                  help="print JSON instead of a table"), ()),
    "out": Option("--out", dict(default=None, help="output"), ()),
}

_INDEX = ("finetune.features:RetrievalIndex",)
SHARED.update({
    "metric": Option("--metric", dict(choices=("cosine", "ip"), default="cosine",
                                      help="cosine (L2-normalised) or ip (raw inner product) (default: cosine)"),
                     _INDEX),
    "method": Option("--method", dict(choices=("exact", "ivf", "ivfpq", "hnsw"), default="exact",
                                      help="exact scan, or a faiss index: ivf, ivfpq (compressed), hnsw; the "
                                           "faiss ones need the faiss extra (default: exact)"), _INDEX),
    "nlist": Option("--nlist", dict(type=count(1), default=None, metavar="N",
                                    help="ivf/ivfpq cells (default: about 4 sqrt(number of descriptors))"), _INDEX),
    "nprobe": Option("--nprobe", dict(type=count(1), default=16, metavar="N",
                                      help="ivf/ivfpq cells scanned per query (default: 16)"), _INDEX),
    "pq_m": Option("--pq-m", dict(type=count(1), default=None, metavar="BYTES",
                                  help="ivfpq bytes per descriptor, dividing the dimension (default: dimension / 4)"),
                   _INDEX),
    "hnsw_m": Option("--hnsw-m", dict(type=count(1), default=32, metavar="N",
                                      help="hnsw links per descriptor (default: 32)"), _INDEX),
    "ef_search": Option("--ef-search", dict(type=count(1), default=64, metavar="N",
                                            help="hnsw candidate list per query (default: 64)"), _INDEX),
    "refine": Option("--refine", dict(type=count(1), default=None, metavar="N",
                                      help="ivfpq re-ranking: fetch top-k x N candidates and order them by exact "
                                           "scores from the saved descriptors; 1: off (default: 10 for ivfpq)"),
                     _INDEX),
})
INDEX_OPTIONS = ("metric", "method", "nlist", "nprobe", "pq_m", "hnsw_m", "ef_search", "refine")


def add_index_options(parser) -> None:
    """Add the :class:`~finetune.RetrievalIndex` settings (:data:`INDEX_OPTIONS`) to ``parser``, as a group."""
    group = parser.add_argument_group("index settings (RetrievalIndex parameters)")
    for name in INDEX_OPTIONS:
        option = SHARED[name]
        group.add_argument(option.flag, **option.kwargs)


def index_kwargs(args) -> dict:
    """The :class:`~finetune.RetrievalIndex` keyword arguments of parsed :func:`add_index_options`."""
    return {name: getattr(args, name) for name in INDEX_OPTIONS}


def add_shared(parser, name: str, **changes) -> argparse.Action:
    """Add the shared option ``name`` (a key of :data:`SHARED`) to ``parser``; return its action.

    Only ``--out`` takes a per-command ``help``, ``metavar``, ``required``,
    ``default`` and ``type`` (what is written, and where); every other shared option
    is added exactly as :data:`SHARED` defines it, so its default is the API's.
    """
    if name in INDEX_OPTIONS:
        raise TypeError(f"add_shared({name!r}): the index settings go together, through add_index_options.")
    allowed = {"help", "required", "metavar", "default", "type"} if name == "out" else set()
    if set(changes) - allowed:
        raise TypeError(f"add_shared({name!r}) takes no {sorted(set(changes) - allowed)}: the option is shared.")
    if name == "out" and changes.get("metavar") not in ("DIR", "PREFIX"):  # a file: it needs a name
        changes.setdefault("type", file_name)
    option = SHARED[name]
    return parser.add_argument(option.flag, **{**option.kwargs, **changes})


def ctx_of(args):
    """The devices ``--ctx`` names (a list of ``mx.Context``), or ``None`` for the current one."""
    if not getattr(args, "ctx", None):
        return None
    from .._context import resolve_ctx
    from ..errors import FinetuneError

    try:
        return resolve_ctx(args.ctx)
    except FinetuneError as exc:  # the same error, naming the flag
        raise type(exc)(f"--ctx {args.ctx!r}: {exc}") from None


# ------------------------------------------------------------ deprecated spellings
def _warn(parser, namespace, old: str, new: str) -> None:
    """One ``warning:`` line per deprecated spelling and command line."""
    seen = namespace.__dict__.setdefault("_deprecated", set())
    if old in seen:
        return
    seen.add(old)
    sys.stderr.write(f"{parser.prog}: warning: {old} is deprecated; use {new}\n")


class _Alias(argparse.Action):
    """An old spelling of an option: warns, then does what the new spelling does."""

    def __init__(self, option_strings, dest, new: str = "", kind: str = "store", **kwargs):
        if kind == "store_true":
            kwargs.update(nargs=0, const=True)
        super().__init__(option_strings, dest, **kwargs)
        self.new, self.kind = new, kind

    def __call__(self, parser, namespace, values, option_string=None):
        _warn(parser, namespace, option_string, self.new)
        if self.kind == "append":
            items = list(getattr(namespace, self.dest, None) or [])
            setattr(namespace, self.dest, items + [values])
        elif self.kind == "store_true":
            setattr(namespace, self.dest, True)
        else:
            setattr(namespace, self.dest, values)


def add_alias(parser, old: str, new_action: argparse.Action, kind: str = "store") -> None:
    """Accept ``old`` as a deprecated spelling of ``new_action`` (hidden from ``--help``).

    ``kind`` is what the new option does: ``store``, ``append`` or ``store_true``.
    """
    kwargs = {} if kind == "store_true" else {"type": new_action.type, "nargs": new_action.nargs,
                                               "metavar": new_action.metavar}
    parser.add_argument(old, dest=new_action.dest, action=_Alias, new=new_action.option_strings[-1], kind=kind,
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)


class _PositionalOut(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        if values is not None:
            setattr(namespace, self.dest, values)


def add_positional_out(parser, old: str, required: bool = True) -> None:
    """Accept the output as a trailing positional ``old`` (the former spelling) besides ``--out``.

    Call after the command's other positionals. The value reaches ``args.out``
    with a deprecation warning; both together, or neither when ``required``,
    is a usage error.
    """
    parser.add_argument("_out_positional", nargs="?", default=None, action=_PositionalOut, metavar=old,
                        help=argparse.SUPPRESS)
    parser._out_positional = (old, required)


def add_out(parser, old: str, **changes) -> argparse.Action:
    """Add ``--out`` (``changes`` as for :func:`add_shared`) and its former trailing positional ``old``.

    Call after the command's other positionals; returns the ``--out`` action.
    """
    add_positional_out(parser, old)
    return add_shared(parser, "out", **changes)


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` that resolves a deprecated positional output after parsing."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        spec = getattr(self, "_out_positional", None)
        if spec is not None:
            old, required = spec
            value = namespace.__dict__.pop("_out_positional", None)
            if value is None:  # argparse fills an optional positional before the options that follow it
                value = next((x for x in extras if not x.startswith("-")), None)
                if value is not None:
                    extras.remove(value)
            if value is not None:
                out_type = next((a.type for a in self._actions if a.dest == "out"), None)
                try:
                    value = out_type(value) if callable(out_type) else value
                except argparse.ArgumentTypeError as exc:
                    self.error(f"argument {old}: {exc}")
                if namespace.out is not None:
                    self.error(f"the output is given twice: {old} {value!r} and --out {namespace.out!r}; "
                               "give --out only")
                _warn(self, namespace, f"the positional {old}", f"--out {old}")
                namespace.out = value
            if required and namespace.out is None:
                self.error("the following arguments are required: --out")
        return namespace, extras
