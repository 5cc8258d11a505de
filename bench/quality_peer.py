"""Peer column: Headwise's DEFAULTS vs the same network built in Keras 3 (torch backend) the idiomatic way.

    KERAS_BACKEND=torch python bench/quality_peer.py [--seeds 0,1,2] [--json bench/results/quality_peer.json]
        [--set training.learning_rate=0.003 ...] [--patch bn_momentum=0.01 ...] [--no-keras] [--threads 1]
    (also: python bench/quality.py --peer ...; keras is the `bench` extra: pip install -e '.[bench]')

Task (issue 15): scikit-learn digits upscaled to 16x16 (bench/quality.py's `load`: its fixed stratified 30% test
set per seed, the service's preprocessing), three heads:
  digit     multiclass (10)           labelled on every training sample
  is_large  binary (digit >= 5)       SPARSE: labelled on 15% of the training samples
  ink       regression GATED on is_large: mean ink of the 8x8 scan, labelled only where digit >= 5
Headwise: `train()` with a spec that gives only the tasks and the input shape (`model: {image_size: 16,
channels: 1}`): every other setting is the default of service/ml/spec.py (so this bench follows the defaults as
they change). `--set path=value` overrides one spec setting (JSON value), `--patch` changes what the spec cannot
(bench-only diagnosis: bn_momentum, adam_eps, residual_gamma), both to find which default costs accuracy.
Keras: the same trunk (stem conv3x3-BN-ReLU, `depth` residual blocks with the same widths/strides, global average
pool, dropout, per head Dense(head_hidden)-ReLU-Dropout-Dense), the same model settings, optimiser values
(AdamW, learning_rate, weight_decay) and batch size as Headwise's spec, 20 epochs, on the SAME train/validation
split (service.ml.train.stratified_split) and test set; written as a Keras user would: per-output losses with
reduction="mean_with_sample_weight" and the label masks as per-output `sample_weight` (0 = missing / gated off),
BatchNormalization(momentum=1 - torch's 0.1, epsilon=1e-5), raw regression target, constant learning rate,
Keras's own initialisers and AdamW epsilon (1e-7) and decay on every variable, the best epoch by val_loss kept
(EarlyStopping(restore_best_weights=True) with patience = epochs).
Per head and system: the test metric's mean and spread over the seeds; verdict per head: Headwise "beats",
"matches" or "worse than" Keras, by whether the difference of the means exceeds the larger of the two seed
standard deviations (noise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import emit, machine, peak_rss_mb, table  # noqa: E402
from service.ml import metrics as M  # noqa: E402
from service.ml.data import Labels, TrainingData  # noqa: E402
from service.ml.inference import Predictor  # noqa: E402
from service.ml.spec import parse_spec  # noqa: E402
from service.ml.train import stratified_split, train  # noqa: E402

TASKS = [
    {"name": "digit", "type": "multiclass", "classes": [str(d) for d in range(10)]},
    {"name": "is_large", "type": "binary"},
    {"name": "ink", "type": "regression", "gate": {"task": "is_large"}},
]
PRIMARY = {"digit": "accuracy", "is_large": "accuracy", "ink": "rmse"}
SPARSE = 0.15  # fraction of training samples that keep their is_large label
PIXEL_MEAN, PIXEL_STD = 0.5, 0.25  # service/ml/network.py
KERAS_EPOCHS = 20  # the peer's fixed budget (Headwise's epochs default until "auto"; the recorded runs used it)


def peer_data(seed: int):
    """(images, values, masks, train pool indices, test indices, training masks) for one seed."""
    from bench.quality import load

    images, values, masks, train_idx, test_idx, _ = load(seed)
    values = {n: values[n] for n in PRIMARY}
    masks = {n: masks[n] for n in PRIMARY}
    rng = np.random.default_rng([seed, 15])
    train_masks = {n: masks[n][train_idx].copy() for n in PRIMARY}
    train_masks["is_large"] &= rng.random(len(train_idx)) < SPARSE
    return images, values, masks, train_idx, test_idx, train_masks


def set_path(doc: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for p in parents:
        doc = doc.setdefault(p, {})
    doc[leaf] = value


def peer_spec(seed: int, overrides: list[str]):
    doc = {"tasks": TASKS, "model": {"image_size": 16, "channels": 1}, "training": {"seed": seed, "device": "cpu"}}
    for item in overrides:
        path, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:  # a bare word: a string (training.schedule=none)
            value = raw
        set_path(doc, path, value)
    return parse_spec(doc)


def apply_patches(patches: list[str]) -> None:
    """Bench-only diagnosis of settings the spec does not expose (process-wide monkeypatches of the trainer's
    names in service.ml.train.loop)."""
    for item in patches:
        key, _, raw = item.partition("=")
        if key not in PATCHES:
            raise SystemExit(f"--patch {key}: unknown ({', '.join(PATCHES)})")
        PATCHES[key](float(raw))


def _patch_bn_momentum(value: float) -> None:
    from service.ml.train import loop

    base = loop.MultiTaskCNN

    class Patched(base):  # type: ignore[misc, valid-type]
        def __init__(self, spec):
            super().__init__(spec)
            for m in self.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.momentum = value

    loop.MultiTaskCNN = Patched


def _patch_adam_eps(value: float) -> None:
    from service.ml.train import loop

    make = loop.make_optimizer

    def patched(*args, **kwargs):
        opt = make(*args, **kwargs)
        for group in opt.param_groups:
            group["eps"] = value
        return opt

    loop.make_optimizer = patched


def _patch_residual_gamma(value: float) -> None:
    """The residual blocks' last BatchNorm weight at init (Headwise: 0, each block starts as the identity)."""
    from service.ml.train import loop

    base = loop.MultiTaskCNN

    class Patched(base):  # type: ignore[misc, valid-type]
        def __init__(self, spec):
            super().__init__(spec)
            for block in self.blocks:
                torch.nn.init.constant_(block.bn2.weight, value)

    loop.MultiTaskCNN = Patched


PATCHES = {"bn_momentum": _patch_bn_momentum, "adam_eps": _patch_adam_eps, "residual_gamma": _patch_residual_gamma}


def headwise_run(spec, images, values, train_idx, train_masks, test_idx) -> dict:
    labels = {}
    for n in PRIMARY:
        v, m = values[n][train_idx], train_masks[n]
        labels[n] = Labels(np.where(m, v, 0).astype(v.dtype), m.copy())
    t0 = time.perf_counter()
    r = train(spec, TrainingData(images=images[train_idx], labels=labels), device="cpu")
    seconds = time.perf_counter() - t0
    out = Predictor.from_result(r).outputs(images[test_idx])
    return {"outputs": out, "normalization": r.normalization, "seconds": seconds, "epochs": len(r.history),
            "best_epoch": r.best_epoch}


# ------------------------------------------------------------------------------------------------ Keras peer
def keras_model(spec):
    import keras
    from keras import layers

    cfg = spec.model
    bn = {"momentum": 0.9, "epsilon": 1e-5}  # Keras momentum = 1 - PyTorch's 0.1 (Keras's default 0.99 is not it)

    def block(x, cout, stride):
        y = layers.Conv2D(cout, 3, strides=stride, padding="same", use_bias=False)(x)
        y = layers.ReLU()(layers.BatchNormalization(**bn)(y))
        y = layers.BatchNormalization(**bn)(layers.Conv2D(cout, 3, padding="same", use_bias=False)(y))
        short = x
        if stride != 1 or x.shape[-1] != cout:
            short = layers.BatchNormalization(**bn)(layers.Conv2D(cout, 1, strides=stride, use_bias=False)(x))
        return layers.ReLU()(layers.Add()([y, short]))

    inp = keras.Input((cfg.image_size, cfg.image_size, cfg.channels))
    x = layers.Rescaling(1.0 / (255.0 * PIXEL_STD), offset=-PIXEL_MEAN / PIXEL_STD)(inp)
    x = layers.ReLU()(layers.BatchNormalization(**bn)(
        layers.Conv2D(cfg.width, 3, strides=2 if cfg.image_size >= 64 else 1, padding="same", use_bias=False)(x)))
    cin = cfg.width
    for i in range(cfg.depth):
        stride = 2 if i % 2 == 1 else 1
        cout = min(cin * 2, cfg.width * 4) if stride == 2 else cin
        x = block(x, cout, stride)
        cin = cout
    z = layers.Dropout(cfg.dropout)(layers.GlobalAveragePooling2D()(x))
    outputs = {}
    for t in spec.tasks:
        h = layers.Dropout(cfg.dropout)(layers.Dense(cfg.head_hidden, activation="relu")(z))
        outputs[t.name] = layers.Dense(t.num_outputs, name=t.name)(h)
    return keras.Model(inp, outputs)


def keras_run(spec, images, values, train_idx, train_masks, test_idx, seed: int) -> dict:
    import keras

    keras.utils.set_random_seed(seed)
    model = keras_model(spec)
    red = "mean_with_sample_weight"
    tc = spec.training
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=tc.learning_rate, weight_decay=tc.weight_decay),
        loss={"digit": keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=red),
              "is_large": keras.losses.BinaryCrossentropy(from_logits=True, reduction=red),
              "ink": keras.losses.MeanSquaredError(reduction=red)},
    )
    pool = TrainingData(images=images[train_idx], labels={
        n: Labels(np.where(train_masks[n], values[n][train_idx], 0), train_masks[n]) for n in PRIMARY})
    tr, va = stratified_split(spec, pool)  # the split Headwise trains on

    def arrays(idx):
        x = images[train_idx][idx].astype(np.float32)
        y = {n: np.where(train_masks[n], values[n][train_idx], 0)[idx].astype(np.float32).reshape(len(idx), -1)
             for n in PRIMARY}
        y["digit"] = y["digit"].astype(np.int64)
        w = {n: train_masks[n][idx].astype(np.float32) for n in PRIMARY}
        return x, y, w

    x, y, w = arrays(tr)
    vx, vy, vw = arrays(va)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=KERAS_EPOCHS, restore_best_weights=True)
    t0 = time.perf_counter()
    hist = model.fit(x, y, sample_weight=w, validation_data=(vx, vy, vw), batch_size=tc.batch_size,
                     epochs=KERAS_EPOCHS, shuffle=True, verbose=0, callbacks=[stop])
    seconds = time.perf_counter() - t0
    pred = model.predict(images[test_idx].astype(np.float32), batch_size=256, verbose=0)
    out = {n: np.asarray(pred[n]) for n in PRIMARY}
    out = {n: (v if n == "digit" else v[:, 0]) for n, v in out.items()}
    val_loss = hist.history["val_loss"]
    return {"outputs": out, "normalization": {}, "seconds": seconds, "epochs": len(val_loss),
            "best_epoch": int(np.argmin(val_loss)) + 1}


# ------------------------------------------------------------------------------------------------ report
def summary(per_seed: list[dict]) -> dict:
    out = {}
    for n, key in PRIMARY.items():
        xs = [s[n][key] for s in per_seed]
        out[n] = {"metric": key, "mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0,
                  "min": min(xs), "max": max(xs), "seeds": xs}
    return out


def verdicts(hw: dict, peer: dict) -> dict:
    out = {}
    for n, key in PRIMARY.items():
        sign = -1.0 if key in M.LOWER_IS_BETTER else 1.0
        diff = sign * (hw[n]["mean"] - peer[n]["mean"])  # > 0: Headwise better
        noise = max(hw[n]["sd"], peer[n]["sd"])
        word = "beats" if diff > noise else "matches" if diff >= -noise else "worse than"
        out[n] = {"verdict": f"Headwise {word} Keras", "diff": diff, "noise": noise,
                  "ratio": hw[n]["mean"] / peer[n]["mean"] if peer[n]["mean"] else None}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--set", action="append", default=[], help="Headwise spec override path=JSON value")
    ap.add_argument("--patch", action="append", default=[], help="bench-only: bn_momentum=X, adam_eps=X, residual_gamma=X")
    ap.add_argument("--no-keras", action="store_true", help="Headwise only (diagnosis runs)")
    ap.add_argument("--keras-from", help="reuse the Keras runs of an earlier result JSON (same seeds) instead of "
                    "training Keras again (the slow half); its runs and versions are copied into this result")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    apply_patches(args.patch)
    seeds = [int(s) for s in args.seeds.split(",")]
    t_start = time.perf_counter()
    systems = ["headwise"] + ([] if args.no_keras else ["keras"])
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    reused = None
    if args.keras_from:
        reused = json.loads(Path(args.keras_from).read_text())
        runs["keras"] = [r for r in reused["runs"]["keras"] if r["seed"] in seeds]
        if sorted(r["seed"] for r in runs["keras"]) != sorted(seeds):
            raise SystemExit(f"{args.keras_from}: has Keras runs for seeds {[r['seed'] for r in runs['keras']]}")
        systems = ["headwise", "keras"]
    eval_spec = parse_spec({"tasks": TASKS, "model": {"image_size": 16, "channels": 1}})
    for seed in seeds:
        images, values, masks, train_idx, test_idx, train_masks = peer_data(seed)
        spec = peer_spec(seed, args.set)
        test_values = {n: values[n][test_idx] for n in PRIMARY}
        test_masks = {n: masks[n][test_idx] for n in PRIMARY}
        for system in systems:
            if system == "keras" and reused is not None:
                continue
            fn = headwise_run if system == "headwise" else keras_run
            extra = (seed,) if system == "keras" else ()
            r = fn(spec, images, values, train_idx, train_masks, test_idx, *extra)
            scores = M.evaluate(eval_spec, r["outputs"], test_values, test_masks, r["normalization"])
            runs[system].append({"seed": seed, **{n: scores[n] for n in PRIMARY},
                                 "seconds": round(r["seconds"], 1), "epochs": r["epochs"],
                                 "best_epoch": r["best_epoch"]})
            print(f"seed {seed} {system:8s} " + "  ".join(f"{n} {scores[n][k]:.4f}" for n, k in PRIMARY.items())
                  + f"  ({r['seconds']:.0f} s, best epoch {r['best_epoch']}/{r['epochs']})", flush=True)
    sums = {s: summary(runs[s]) for s in systems}
    result = {
        "benchmark": "quality_peer",
        "data": {"source": "sklearn.datasets.load_digits", "image_size": 16, "sparse_is_large": SPARSE,
                 "gate": "ink gated on is_large, labelled where digit >= 5"},
        "headwise_spec": peer_spec(seeds[0], args.set).model_dump(mode="json"),
        "overrides": args.set, "patches": args.patch, "seeds": seeds,
        "keras": reused["keras"] if reused is not None else None if args.no_keras else {
            "version": __import__("keras").__version__, "backend": __import__("keras").backend.backend()},
        "keras_from": args.keras_from,
        "machine": machine("cpu"),
        "runs": runs, "summary": sums,
        "verdicts": verdicts(sums["headwise"], sums["keras"]) if "keras" in sums else None,
        "total_seconds": round(time.perf_counter() - t_start, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    emit(result, args.json)
    print()
    rows = []
    for n, key in PRIMARY.items():
        cells = [f"{sums[s][n]['mean']:.4f} ± {sums[s][n]['sd']:.4f} [{sums[s][n]['min']:.3f}-{sums[s][n]['max']:.3f}]"
                 for s in systems]
        v = result["verdicts"][n]["verdict"] if result["verdicts"] else ""
        rows.append([n, key, *cells, v])
    print(table(["head", "metric", *[f"{s} mean ± sd [min-max]" for s in systems], "verdict"], rows))
    print(f"\nseeds {seeds}; overrides {args.set or '-'}; patches {args.patch or '-'}; "
          f"total {result['total_seconds']} s")


if __name__ == "__main__":
    main()
