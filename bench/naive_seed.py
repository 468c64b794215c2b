"""A faithful reference of the seed's training loop and prediction, kept only for comparison.

Every epoch runs the whole model over every (augmented) training image and then over the test
set; the backbone is frozen by ``requires_grad = False`` but, as in the seed, ``model.train()``
still updates BatchNorm statistics. Prediction re-reads the checkpoint and rebuilds the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vision_trainer.ml.backbones import BackboneSpec, create_backbone, resolve_backbone
from vision_trainer.ml.data import eval_transform, train_transform


class Folder(Dataset):
    def __init__(self, items: Sequence[tuple[Path, int]], transform: Any) -> None:
        self.items, self.transform = list(items), transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        return self.transform(Image.open(path).convert("RGB")), label


def train_and_evaluate_model(
    spec: BackboneSpec,
    train: Sequence[tuple[Path, int]],
    test: Sequence[tuple[Path, int]],
    class_names: Sequence[str],
    epochs: int,
    save_to: Path,
) -> dict[str, Any]:
    """The seed's loop. Returns the log, the final test accuracy and the images pushed through the backbone."""
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    prep = spec.preprocessing()
    loaders = {
        "train": DataLoader(Folder(train, train_transform(prep)), batch_size=32, shuffle=True, num_workers=0),
        "test": DataLoader(Folder(test, eval_transform(prep)), batch_size=32, shuffle=False, num_workers=0),
    }
    model = create_backbone(spec, num_classes=None, pretrained=True)
    for param in model.parameters():
        param.requires_grad = False
    setattr(model, spec.head_attr, nn.Linear(spec.feature_size, len(class_names)))
    model = model.to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(getattr(model, spec.head_attr).parameters(), lr=0.001, momentum=0.9)
    log, seen, test_acc = [], 0, 0.0
    for epoch in range(epochs):
        model.train()
        running_loss, corrects = 0.0, 0
        for inputs, labels in loaders["train"]:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * inputs.size(0)
            corrects += int((outputs.argmax(1) == labels).sum())
            seen += inputs.size(0)
        model.eval()
        test_corrects = 0
        with torch.no_grad():
            for inputs, labels in loaders["test"]:
                outputs = model(inputs.to(device))
                test_corrects += int((outputs.argmax(1) == labels.to(device)).sum())
                seen += inputs.size(0)
        test_acc = test_corrects / len(test)
        log.append(
            f"Epoch {epoch + 1}/{epochs} Loss: {running_loss / len(train):.4f} "
            f"Train Acc: {corrects / len(train):.4f} Test Acc: {test_acc:.4f}"
        )
    torch.save(
        {"model_state_dict": model.state_dict(), "class_names": list(class_names), "backbone": spec.name}, save_to
    )
    return {"log": log, "test_accuracy": test_acc, "images_through_backbone": seen}


def predict_like_the_seed(checkpoint_path: Path, image: Image.Image) -> tuple[str, float]:
    """Re-read the checkpoint and rebuild the model for one prediction, as the seed's /predict does."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    spec = resolve_backbone(checkpoint.get("backbone", "resnet18"))
    model = create_backbone(spec, num_classes=len(checkpoint["class_names"]), pretrained=False)
    model.load_state_dict(checkpoint["model_state_dict"])
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(eval_transform(spec.preprocessing())(image.convert("RGB")).unsqueeze(0)), dim=1)[0]
    confidence, index = probs.max(0)
    return checkpoint["class_names"][int(index)], float(confidence)
