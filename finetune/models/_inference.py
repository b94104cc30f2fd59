"""The inference record: how a network is meant to be run for prediction, saved with it."""

from __future__ import annotations

import dataclasses

from ..errors import ConfigError, ModelError

__all__ = ["CarriesInference", "Inference", "as_inference"]


def _inference_fields() -> dict:
    from .._validation import Options

    return {"tta": [Options(["mirror"]), None]}


@dataclasses.dataclass(frozen=True)
class Inference:
    """How a network is meant to be run for prediction: a choice made with its training, saved with it.

    A model directory keeps it in ``config.json`` under ``"inference"``;
    :class:`~finetune.Predictor` and :func:`~finetune.evaluate` follow it
    unless told otherwise. A directory without the section runs plainly.

    Parameters
    ----------
    tta : {"mirror"} or None
        Test-time augmentation: ``"mirror"`` averages the logits of each
        image and of its left-right mirror; ``None`` runs the image alone.

    Examples
    --------
    >>> Inference(tta="mirror").to_dict()
    {'tta': 'mirror'}
    >>> Inference.from_dict(None)
    Inference(tta=None)
    >>> Inference(tta="flip")
    Traceback (most recent call last):
    ...
    finetune.errors.ConfigError: The 'tta' parameter of Inference must be 'mirror' or None. Got 'flip' instead.
    """

    tta: str | None = None

    def __post_init__(self):
        from .._validation import validate

        validate("Inference", {"tta": self.tta}, _inference_fields())

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict (what ``config.json`` stores)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values, where: str = "inference record") -> "Inference":
        """The record of a ``config.json`` section; ``None`` (no section) is the plain one.

        Raises
        ------
        ModelError
            ``values`` is not an object, has a key this finetune does not
            know, or a value outside its constraint (the message names
            ``where`` and the key).
        """
        from .._validation import describe, satisfies, show

        if values is None:
            return cls()
        if not isinstance(values, dict):
            raise ModelError(f"The {where} has 'inference' = {show(values)}; expected an object such as "
                             '{"tta": "mirror"}.')
        fields = _inference_fields()
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ModelError(f"The {where} has 'inference' keys {unknown} this finetune does not know (it knows "
                             f"{sorted(fields)}); the model was written by a newer finetune: upgrade finetune.")
        for key, constraint in fields.items():
            if key in values and not satisfies(values[key], constraint):
                raise ModelError(f"The {where} has 'inference' {key!r} = {show(values[key])}; expected "
                                 f"{describe(constraint)}.")
        return cls(**values)


def as_inference(value) -> Inference:
    """``value`` (an :class:`Inference`, a dict of its fields or ``None``) as an :class:`Inference`."""
    if isinstance(value, Inference):
        return value
    if value is None:
        return Inference()
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(_inference_fields()))
        if unknown:
            raise ConfigError(f"The 'inference' of a network takes the keys {sorted(_inference_fields())}. "
                              f"Got {unknown} instead.")
        return Inference(**value)
    raise ConfigError(f"The 'inference' of a network must be a finetune Inference, a dict such as "
                      f'{{"tta": "mirror"}} or None. Got {type(value).__name__} instead.')


class CarriesInference:
    """The ``inference`` member of the model protocol, for the library's networks (a mixin)."""

    @property
    def inference(self) -> Inference:
        """How the network is meant to be run for prediction (:class:`Inference`; saved with it).

        Set it to an :class:`Inference`, a dict of its fields
        (``{"tta": "mirror"}``) or ``None`` (plain).
        """
        return self._inference

    @inference.setter
    def inference(self, value) -> None:
        self._inference = as_inference(value)
