"""What a folder holds, without the bookkeeping files finetune keeps beside and inside its outputs on purpose.

Each multi-file output has a lock (``.<name>.lock``) and a manifest (``.<name>.finetune``); each folder
output a marker (``.finetune``). Temporaries, journals and set-aside folders are still listed, so a test
that a writer left nothing behind keeps its meaning.
"""

import os


def listing(folder) -> list:
    """The sorted names in ``folder``, locks, manifests and markers left out."""
    return sorted(n for n in os.listdir(folder) if not n.endswith((".lock", ".finetune")))
