"""Lightning callback: the shared full-ranking evaluation on the valid split after every epoch.

It logs `valid/<metric>@<k>` for every metric of evaluation.metrics (e.g. valid/ndcg@10) so checkpoints
and EarlyStopping can monitor the same numbers the offline comparison reports; it calls the same code
(evaluate_recommender). It also logs `step` = the epoch, so Lightning writes every epoch-level scalar
(valid/*, train/loss) at the epoch on TensorBoard's x-axis, not at the optimiser step. A split without
users is not evaluated.
"""

from __future__ import annotations

from typing import Sequence

import pytorch_lightning as pl

from deeprec.evaluation.evaluator import evaluate_recommender
from deeprec.evaluation.metrics import METRICS



class FullRankingEvaluation(pl.Callback):
    """Evaluate `pl_module` (a Recommender) on data's valid split at each train epoch end."""

    def __init__(self, data, ks: Sequence[int] = (5, 10, 20), batch_size: int = 1024, split: str = "valid") -> None:
        self.data = data
        self.ks = tuple(ks)
        self.batch_size = batch_size
        self.split = split
        #: False when no user has an item in `split`: nothing to evaluate, nothing to monitor
        self.active = bool(data.truth(split).nnz)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("step", float(trainer.current_epoch), logger=True, on_step=False, on_epoch=True)
        if not self.active:
            return
        was_training = pl_module.training
        pl_module.eval()
        metrics = evaluate_recommender(pl_module, self.data, self.split, self.ks, self.batch_size)
        pl_module.train(was_training)
        logged = {
            f"{self.split}/{key}": value
            for key, value in metrics.items()
            if key.split("@")[0] in METRICS
        }
        pl_module.log_dict(logged, prog_bar=False, logger=True, sync_dist=False)
