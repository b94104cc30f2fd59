"""Deprecated alias of :mod:`finetune.use`; import from ``finetune`` or ``finetune.use`` instead.

Kept so that code written for earlier versions (``from finetune.deploy import ...``)
keeps working until finetune 0.3.0; every access warns with a :class:`DeprecationWarning`.
"""

from ._legacy import module_alias

__getattr__ = module_alias("finetune.deploy", "finetune.use",
                           ("Deployment", "export_for_deployment", "load_deployment", "verify_deployment"))
