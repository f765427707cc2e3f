"""What the benchmark scripts share (imported by scripts run as `python scripts/<name>.py`)."""

# Prepended to a child's `python -c` code: at exit the child prints its own peak RSS (VmHWM is per
# process image, while ru_maxrss read in the parent would carry the parent's own peak).
PEAK_PRELUDE = (
    "import atexit, sys\n"
    "def _peak():\n"
    "    kb = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
    "    print('PEAK_KB', kb, file=sys.stderr)\n"
    "atexit.register(_peak)\n"
)


def plain_training_loop(model, loader, optimizer, epochs: int, device):
    """A deeprec LightningRecommender trained by hand: the same per-epoch reseed and row order as
    its on_train_epoch_start, the same training_step and optimiser, no Trainer. Returns the last loss."""
    import torch

    loss = None

    for epoch in range(epochs):
        torch.manual_seed(model.seed * 100_003 + epoch)
        if model.training_rows:
            model._epoch_order = torch.randperm(len(model.training_rows[0])).to(device)
        for batch_idx, batch in enumerate(loader):
            batch = [t.to(device) for t in batch] if isinstance(batch, (list, tuple)) else batch.to(device)
            loss = model.training_step(batch, batch_idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return loss
