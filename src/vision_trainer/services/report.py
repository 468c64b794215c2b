"""``report.png``: accuracy and loss per epoch next to the confusion matrix."""

from __future__ import annotations

import io
from typing import Any

from .context import Services
from .models import get_model


def report_png(services: Services, model_id: str) -> bytes:
    """Render the model's training history and test confusion matrix. Raises NotFound."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    model = get_model(services, model_id)
    # Names come from users: "$x$" would be read as math (and "$\\foo$" fail to render), so no text is.
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        figure = Figure(figsize=(13, 4.2), dpi=100)
        acc_ax, loss_ax, cm_ax = figure.subplots(1, 3)
        _plot_history(acc_ax, loss_ax, model["history"])
        _plot_confusion(cm_ax, model)
        figure.suptitle(f"{model['name']} ({model['backbone']})")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _plot_history(acc_ax: Any, loss_ax: Any, history: list[dict[str, Any]]) -> None:
    epochs = [row["epoch"] for row in history]
    acc_ax.plot(epochs, [row["train_acc"] for row in history], marker="o", label="train")
    acc_ax.plot(epochs, [row["test_acc"] for row in history], marker="o", label="test")
    acc_ax.set(title="Accuracy per epoch", xlabel="epoch", ylim=(0, 1.02))
    acc_ax.legend()
    loss_ax.plot(epochs, [row["loss"] for row in history], marker="o", color="tab:red")
    loss_ax.set(title="Training loss per epoch", xlabel="epoch")
    if not history:
        for ax in (acc_ax, loss_ax):
            ax.text(0.5, 0.5, "no history (imported model)", ha="center", transform=ax.transAxes)


def _plot_confusion(ax: Any, model: dict[str, Any]) -> None:
    matrix = (model["metrics"] or {}).get("confusion_matrix")
    ax.set(title="Confusion matrix (test split)", xlabel="predicted", ylabel="true")
    if not matrix:
        ax.text(0.5, 0.5, "no test metrics", ha="center", transform=ax.transAxes)
        return
    names = model["class_names"]
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
