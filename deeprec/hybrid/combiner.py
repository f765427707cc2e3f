"""The learned blend: a small MLP over every candidate feature column, trained with Lightning on a
listwise softmax loss over each valid user's candidates (the mean log-likelihood of the user's
relevant candidates), early-stopped on held-out valid users' NDCG@10, best epoch kept.

It can learn what a weighted sum cannot, e.g. to trust popularity more for users with a short
history (the `history` column). A linear skip connection starts it from the linear blend's form.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from deeprec.hybrid.blend import Blend, CandidateFeatures, ndcg_at, split_users, subset
from deeprec.hybrid.members import KeepBestState


class CombinerNet(nn.Module):
    """score = linear(x) + MLP(x) for candidate features x [..., F]."""

    def __init__(self, n_features: int, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1)
        self.mlp = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[2].weight)  # start as the linear model
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.linear(x) + self.mlp(x)).squeeze(-1)


class CombinerModule(pl.LightningModule):
    """Listwise training of CombinerNet on (features [B, C, F], labels [B, C], valid [B, C]) rows."""

    def __init__(self, net: CombinerNet, rows: tuple[torch.Tensor, ...], held: CandidateFeatures, held_truth,
                 lr: float, weight_decay: float, batch_size: int) -> None:
        super().__init__()
        self.net = net
        self.rows = rows
        self.held, self.held_truth = held, held_truth
        self.lr, self.weight_decay, self.batch_size = lr, weight_decay, batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(torch.arange(len(self.rows[0])), batch_size=self.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(0))

    def training_step(self, positions, batch_idx):
        features, labels, valid = (t[positions] for t in self.rows)
        logits = self.net(features).masked_fill(~valid, -float("inf"))
        log_p = torch.log_softmax(logits, dim=1)
        positives = labels.sum(1)
        loss = -(torch.where(labels > 0, log_p, torch.zeros_like(log_p)).sum(1) / positives.clamp(min=1))
        return loss[positives > 0].mean() if bool((positives > 0).any()) else logits.sum() * 0.0

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class HeldOutNDCG(pl.Callback):
    """Logs `held_ndcg`, the NDCG@10 of the module's net on its held-out users, at each train epoch end."""

    def on_train_epoch_end(self, trainer, module: CombinerModule) -> None:
        with torch.no_grad():
            value = ndcg_at(module.net(module.held.features), module.held, module.held_truth)
        module.log("held_ndcg", value)


class CombinerBlend(Blend):
    """The trained CombinerNet as a blend."""

    method = "learned"

    def __init__(self, net: CombinerNet) -> None:
        self.net = net.eval()

    @torch.no_grad()
    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        self.net.to(features.device)
        return self.net(features.float())

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"combiner.{k}": v for k, v in self.net.state_dict().items()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> "CombinerBlend":
        weights = {k[len("combiner."):]: v for k, v in state.items() if k.startswith("combiner.")}
        net = CombinerNet(weights["linear.weight"].shape[1], weights["mlp.0.weight"].shape[0])
        net.load_state_dict(weights)
        return cls(net)


def fit_combiner(batch: CandidateFeatures, labels: torch.Tensor, truth, seed: int, hidden: int = 32, epochs: int = 30,
                 lr: float = 0.01, weight_decay: float = 1e-4, batch_size: int = 256, patience: int = 4) -> CombinerBlend:
    """Train on 80 % of the users, keep the epoch with the best NDCG@10 of the other 20 %."""
    from pytorch_lightning.callbacks import EarlyStopping

    with torch.random.fork_rng(devices=[]):  # seeded training that leaves the caller's CPU generator as it was
        torch.manual_seed(seed)
        fit_rows, held_rows = split_users(len(batch.users), 0.2, seed + 1) if len(batch.users) >= 5 else (
            np.arange(len(batch.users)), np.arange(len(batch.users)))
        part, held = subset(batch, fit_rows), subset(batch, held_rows)
        net = CombinerNet(batch.features.shape[2], hidden)
        rows = (part.features, labels[torch.from_numpy(fit_rows)], part.valid)
        module = CombinerModule(net, rows, held, truth[held_rows], lr, weight_decay, batch_size)
        keep = KeepBestState("held_ndcg")
        # the callback order matters: evaluate, then keep the state, then (EarlyStopping monitors) decide
        trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                             callbacks=[HeldOutNDCG(), keep,
                                        EarlyStopping(monitor="held_ndcg", mode="max", patience=patience)])
        trainer.fit(module)
        if keep.state is not None:
            module.load_state_dict(keep.state)
    return CombinerBlend(net.cpu())
