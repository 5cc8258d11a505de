#!/usr/bin/env bash
# CUDA figures for issue 11 (training fp32 vs bf16+channels_last vs +torch.compile; raw inference batch 1/64),
# on a bare GPU host that has only this repo and a CUDA torch: no `pip install` (offline), PYTHONPATH=. instead.
# Needs torch (CUDA) + numpy + pydantic (+ safetensors); everything else is optional. Every step has its own
# time limit (about 4.5 minutes in all) and a failing step does not stop the others.
#   OUT=/some/dir bash bench/gpu.sh        # JSON + logs in $OUT (default bench/results/gpu)
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/gpu}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start=$(date +%s)

"$PY" - > "$OUT/env.json" 2> "$OUT/env.log" <<'PYEOF'
import importlib, json, os, sys
info = {"python": sys.version.split()[0], "cpu_count": os.cpu_count(), "modules": {}}
for name in ("torch", "numpy", "pydantic", "safetensors", "PIL", "triton", "onnxruntime"):
    try:
        mod = importlib.import_module(name)
        info["modules"][name] = getattr(mod, "__version__", "?")
    except Exception as exc:
        info["modules"][name] = f"missing ({type(exc).__name__})"
try:
    import torch
    info["cuda"] = torch.cuda.is_available()
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
        info["torch_cuda"] = torch.version.cuda
except Exception as exc:
    info["cuda_error"] = repr(exc)
print(json.dumps(info, indent=2))
PYEOF
cat "$OUT/env.json"

step() {  # step NAME SECONDS CMD...: run with a time limit, log to $OUT/NAME.log, note the exit code
  local name=$1 limit=$2; shift 2
  echo "==> $name (limit ${limit}s, at $(( $(date +%s) - start ))s)"
  timeout --kill-after=5 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc" | tee -a "$OUT/steps.txt"
  tail -n 12 "$OUT/$name.log"
}

# 1. training, eager: the trainer (auto = bf16 + channels_last on a bf16 GPU) vs bare fp32 NCHW vs bare bf16+CL
step train_b64 75 "$PY" bench/train_throughput.py --device cuda --samples 16384 --batch 64 --rounds 3 \
  --json "$OUT/train_b64.json"
step train_b256 55 "$PY" bench/train_throughput.py --device cuda --samples 32768 --batch 256 --rounds 3 \
  --json "$OUT/train_b256.json"
# 2. + torch.compile (bare loop only: one compilation, counted in the untimed warm-up)
step train_compile 90 "$PY" bench/train_throughput.py --device cuda --samples 16384 --batch 64 --rounds 3 \
  --compile --variants bare_best,bare_best_compiled --json "$OUT/train_compile.json"
# 3. raw inference: eager fp32, bf16 + channels_last, compiled
step infer 60 "$PY" bench/infer_raw.py --device cuda --seconds 2 --rounds 2 --compile --json "$OUT/infer.json"
# 4. backbones (issue 17): strict loads of real torchvision/timm state dicts (random weights, no network), then
#    224x224 train + inference throughput, Headwise vs the best bare loop (bf16 + channels_last)
step backbone_checks 45 "$PY" bench/gpu_backbones.py --json "$OUT/backbone_checks.json"
step backbones_224 80 "$PY" bench/backbones.py --device cuda --batch 64 --steps 8 --rounds 3 \
  --archs resnet18,mobilenet_v3_large --json "$OUT/backbones_224.json"
echo "total $(( $(date +%s) - start ))s; results in $OUT"
ls -l "$OUT"
