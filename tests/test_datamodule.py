"""InteractionDataModule: a deep model fitted from a data module equals one fitted from the data."""

from __future__ import annotations

import pytest
import torch

from deeprec.data.datamodule import InteractionDataModule
from deeprec.data.interactions import from_frame
from deeprec.errors import ConfigError
from deeprec.models.ncf import NCF
from test_ncf import one_thread, planted_blocks, quiet_trainer  # noqa: F401


def test_fit_from_a_datamodule_equals_fit_from_the_data():
    data = from_frame(planted_blocks(), "planted blocks")
    a = NCF(data.n_users, data.n_items, gmf_dim=4, mlp_dim=4, mlp_layers=[8], batch_size=64, seed=2)
    b = NCF(data.n_users, data.n_items, gmf_dim=4, mlp_dim=4, mlp_layers=[8], batch_size=64, seed=2)
    b.load_state_dict(a.state_dict())
    initial = a.gmf_item.weight.detach().clone()
    a.fit(data, trainer=quiet_trainer(2))
    b.fit(InteractionDataModule(data), trainer=quiet_trainer(2))
    state_a, state_b = a.state_dict(), b.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert not torch.equal(state_a["gmf_item.weight"], initial)  # it did train


def test_datamodule_errors_name_the_problem():
    with pytest.raises(ConfigError, match="needs an InteractionData"):
        InteractionDataModule(None)
    module = InteractionDataModule(from_frame(planted_blocks(), "planted blocks"))
    with pytest.raises(ConfigError, match="inside trainer.fit"):
        module.train_dataloader()
