"""The baseline for bench/predict.py: the FastAPI endpoint a user would write around the same model.

Load the Predictor once at import, then run the network once per request in a plain `def` endpoint (FastAPI runs
it in its threadpool, so concurrent requests run the network concurrently with torch's default threads). Serve:
    NAIVE_ARTIFACT=<artifact dir> python -m uvicorn bench.naive_app:app
"""

from __future__ import annotations

import os

from fastapi import FastAPI, File, UploadFile
from PIL import Image

from service.ml.inference import Predictor

app = FastAPI(title="naive")
predictor = Predictor.load(os.environ["NAIVE_ARTIFACT"], device=os.environ.get("NAIVE_DEVICE", "cpu"))


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}


@app.post("/predict")
def predict(files: list[UploadFile] = File(...)) -> dict:
    images = [Image.open(f.file) for f in files]
    return {"predictions": predictor.predict(images)}
