"""The training loss curve written into every model bundle."""

from __future__ import annotations

from pathlib import Path


def save_loss_curve(history: dict, path: str | Path) -> None:
    """Plot training and validation loss by epoch to a PNG.

    Args:
        history: ``{"loss": [...], "val_loss": [...]}`` (one value per finished epoch).
        path: Destination PNG.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed: this runs in terminals and CI
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        values = history.get(key) or []
        if values:
            axes.plot(range(1, len(values) + 1), values, marker="o", label=label)
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss (cross-entropy per word)")
    axes.set_title("Training and validation loss")
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend()
    figure.tight_layout()
    figure.savefig(str(path), format="png")
    plt.close(figure)
