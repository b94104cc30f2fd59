"""Subprocess entry for the slow training tests: ``python -m tests.train._worker MODE OUT``.

MODE ``run``: train (optionally slowly, optionally resuming) and save the final params.
MODE ``dist``: one dist_sync worker (started by finetune.train.launch).
MODE ``recipe``: one dist_sync worker of ``finetune train`` with the default recipe on OUT/all.rec
(validated on OUT/all.rec), writing the model directory OUT/run; every worker also saves the weights
it ended with to OUT/worker<rank>.params.
"""

import os
import sys
import time

from finetune.cli import main as finetune_main
from finetune.train import Callback, Recipe, Trainer

from ._nets import data, mlp


class Slow(Callback):
    def on_batch_end(self, trainer, epoch, batch, logs):
        time.sleep(float(os.environ.get("SLOW", "0")))


def main(mode, out):
    if mode == "run":
        resume = out if os.environ.get("RESUME") else None
        t = Trainer(mlp(bn=True, dropout=0.3), batch_size=6, progress=False, out_dir=out, checkpoint_every=2,
                    optimizer="nag", optimizer_params={"lr": 0.05}, schedule="cosine", seed=3)
        t.fit(data(60), val=data(12, seed=1), epochs=3, resume=resume, callbacks=[Slow()])
        t.model.save_parameters(os.path.join(out, "final.params"))
    elif mode == "dist":
        t = Trainer(mlp(), batch_size=6, progress=False, kvstore="dist_sync", optimizer_params={"lr": 0.1})
        t.fit(data(40), epochs=2)
        if t.rank_ == 0:
            t.model.save_parameters(os.path.join(out, "dist.params"))
    elif mode == "recipe":
        ended = {}
        fit = Recipe.fit

        def keep(recipe, model, *args, **kwargs):
            trainer = fit(recipe, model, *args, **kwargs)
            ended.update(model=model, rank=trainer.rank_)
            return trainer

        Recipe.fit = keep
        rec = os.path.join(out, "all.rec")
        code = finetune_main(["train", "mobilenet0.25", "--weights", "none", "--train", rec, "--val", rec,
                              "--epochs", "1", "--input-size", "32", "--kvstore", "dist_sync", "--workers", "0",
                              "--out", os.path.join(out, "run"), "--no-progress"])
        ended["model"].save_parameters(os.path.join(out, f"worker{ended['rank']}.params"))
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
