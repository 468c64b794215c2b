"""The seed's /predict, for comparison only: every request re-reads the checkpoint and rebuilds the model.

NAIVE_CHECKPOINT=trained_model.pth .venv/bin/python -m uvicorn naive_server:app --app-dir bench
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from fastapi import FastAPI, File, UploadFile
from naive_seed import predict_like_the_seed
from PIL import Image

app = FastAPI()
CHECKPOINT = Path(os.environ.get("NAIVE_CHECKPOINT", "trained_model.pth"))


@app.get("/")
def root() -> dict[str, str]:
    return {"message": "naive seed server"}


@app.post("/predict")
async def predict(file: UploadFile = File(...)) -> dict[str, object]:
    image = Image.open(io.BytesIO(await file.read())).convert("RGB")
    label, confidence = predict_like_the_seed(CHECKPOINT, image)
    return {"prediction": label, "confidence": confidence}
