"""Transfer: does a backbone pretrained on one labelled split, installed through the weights store, beat
training from scratch on a small split with DIFFERENT labels?

    python bench/transfer.py [--json out.json] [--arch resnet18] [--per-class 10] [--seeds 3] [--threads 2]

Data: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans), upscaled to 32x32 grey with the
service's preprocessing (`to_pixels`; a grey image is repeated to the 3 channels the backbone expects).
  pretrain   every scan of digits 0-4 (about 900), task "digit" with 5 classes 0..4; Headwise trains ARCH from
             scratch on it; the trunk is written as a torchvision-layout .pth and installed with import_weights
             (what `headwise weights import` does), exactly like an operator installs ImageNet weights.
  fine-tune  digits 5-9 only (labels never seen in pretraining): PER_CLASS labelled scans per class for training,
             every other 5-9 scan is the test set. Per seed a different small training set.
Variants on the fine-tune split (same spec apart from the listed fields, same epochs, seed):
  scratch           model.backbone=ARCH, random init
  pretrained        + model.pretrained=<store name>, backbone_lr_multiplier 1
  pretrained+freeze + training.freeze_backbone_epochs=EPOCHS/3, backbone_lr_multiplier 0.1
  headwise          the default small residual CNN from scratch (the engine's pre-existing network)
Reported: test accuracy per variant and seed, mean, and the mean paired difference pretrained - scratch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from bench.common import emit, machine, peak_rss_mb, table  # noqa: E402
from service.ml.data import Labels, TrainingData, to_pixels  # noqa: E402
from service.ml.inference import Predictor  # noqa: E402
from service.ml.spec import parse_spec  # noqa: E402
from service.ml.train import train  # noqa: E402
from service.ml.weights import import_weights  # noqa: E402

SIZE = 32


def load() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    scans = d.images  # (N, 8, 8) in 0..16
    images = np.stack([to_pixels(PIL.Image.fromarray((s * 255 / 16).astype(np.uint8), "L"), SIZE, 1) for s in scans])
    return images, d.target


def spec_for(classes: list[str], arch: str, epochs: int, seed: int, **extra) -> dict:
    model = {"backbone": arch, "image_size": SIZE, "channels": 1, "dropout": 0.1, "head_hidden": 64}
    training = {"epochs": epochs, "batch_size": 32, "learning_rate": 1e-3, "weight_decay": 1e-4,
                "val_fraction": 0.0, "seed": seed, "schedule": "cosine", "mixed_precision": "none"}
    for key, value in extra.items():
        (model if key in ("pretrained", "backbone", "width", "depth") else training)[key] = value
    return {"tasks": [{"name": "digit", "type": "multiclass", "classes": classes}], "model": model,
            "training": training}


def data_for(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> TrainingData:
    return TrainingData(images=images[idx], labels={"digit": Labels(labels[idx].astype(np.int64), np.ones(len(idx), bool))})


def pretrain(images, target, arch: str, epochs: int, store: Path) -> dict:
    idx = np.flatnonzero(target < 5)
    t0 = time.perf_counter()
    result = train(parse_spec(spec_for([str(d) for d in range(5)], arch, epochs, 0)), data_for(images, target, idx),
                   device="cpu")
    trunk = {k[len("backbone."):]: v for k, v in result.state_dict.items() if k.startswith("backbone.")}
    src = store.parent / f"digits04-{arch}.pth"
    torch.save(trunk, src)
    info = import_weights(src, arch, f"digits04-{arch}", store)
    return {"name": info.name, "sha256": info.sha256, "images": len(idx), "epochs": epochs,
            "seconds": round(time.perf_counter() - t0, 1),
            "final_train_loss": result.history[-1]["train"]["digit"]["loss"] if result.history else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pretrain-epochs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images, target = load()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "weights"
        pre = pretrain(images, target, args.arch, args.pretrain_epochs, store)
        name = pre["name"]
        variants = {
            "scratch": {},
            "pretrained": {"pretrained": name},
            "pretrained+freeze": {"pretrained": name, "freeze_backbone_epochs": args.epochs // 3,
                                  "backbone_lr_multiplier": 0.1},
            "headwise": {"backbone": "headwise", "width": 32, "depth": 4},
        }
        late = np.flatnonzero(target >= 5)
        labels = target - 5
        acc: dict[str, list[float]] = {v: [] for v in variants}
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            train_idx = np.concatenate([rng.choice(late[target[late] == d], args.per_class, replace=False)
                                        for d in range(5, 10)])
            test_idx = np.setdiff1d(late, train_idx)
            for variant, extra in variants.items():
                spec = parse_spec(spec_for([str(d) for d in range(5, 10)], args.arch, args.epochs, seed, **extra))
                result = train(spec, data_for(images, labels, train_idx), device="cpu", weights_dir=store)
                logits = Predictor.from_result(result).outputs(images[test_idx])["digit"]
                acc[variant].append(float((logits.argmax(1) == labels[test_idx]).mean()))
    diffs = [p - s for p, s in zip(acc["pretrained"], acc["scratch"], strict=True)]
    result = {
        "benchmark": "transfer", "config": {k: v for k, v in vars(args).items() if k != "json"},
        "machine": machine("cpu"), "pretrain": pre,
        "finetune": {"train_images": 5 * args.per_class, "test_images": int(len(late) - 5 * args.per_class)},
        "test_accuracy": {k: [round(x, 4) for x in v] for k, v in acc.items()},
        "mean_test_accuracy": {k: round(float(np.mean(v)), 4) for k, v in acc.items()},
        "mean_paired_gain_pretrained_minus_scratch": round(float(np.mean(diffs)), 4),
        "pretrained_beats_scratch_in": f"{sum(d > 0 for d in diffs)}/{len(diffs)} seeds",
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    emit(result, args.json)
    print()
    print(table(["variant", "mean test accuracy", *[f"seed {s}" for s in range(args.seeds)]],
                [[k, result["mean_test_accuracy"][k], *v] for k, v in result["test_accuracy"].items()]))
    print(f"pretrained - scratch: {result['mean_paired_gain_pretrained_minus_scratch']:+.4f} "
          f"({result['pretrained_beats_scratch_in']}); pretraining {pre['seconds']} s on {pre['images']} images")


if __name__ == "__main__":
    main()
