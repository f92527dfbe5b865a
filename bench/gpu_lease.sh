#!/usr/bin/env bash
# Everything this project measures on a CUDA GPU, as one script for one short lease:
#   1. CIFAR-10 searches side by side on the one GPU (Conv-4 gates vs edge-popup vs dense,
#      ResNet-18 gates vs edge-popup, Conv-6 channel gates at 50% and 70%), each cut off at
#      SECONDS by `timeout` (a cut-off run keeps its per-epoch metrics.jsonl);
#   2. bench/architectures.py: gates vs dense step time and peak memory per architecture
#      (bf16 autocast), and fp32 / channels-last variants of ResNet-18;
#   3. each finished run exported to .slt (seed + bit masks), so tickets come back small.
#
#   bench/gpu_lease.sh CIFAR10_TAR OUT_DIR [SECONDS]
#
# Run from the repository root; needs torch with CUDA, timm and the package's dependencies
# (PYTHONPATH is set to the checkout, nothing is installed). Results: OUT_DIR/results.tar.gz
# (per run: summary.json, metrics.jsonl, config.json, ticket.slt; logs/), OUT_DIR/*.json from
# the step-time bench, and the printed summary. Few files on purpose: a lease returns few.
set -u
DATA=$1
OUT=$2
BUDGET=${3:-270}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu: a dry run of the script itself
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 SLT_DEPLOY_CACHE=/tmp/slt-cache OMP_NUM_THREADS=2
RUNS=/tmp/gpu-runs
LOGS=$RUNS/logs
rm -rf "$RUNS"
mkdir -p "$LOGS"
py=python3

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $py -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
  nproc; } 2>&1 | tee "$LOGS/machine.txt"

# the decoded uint8 cache, once, before the runs share it
$py -c "from slt_deploy.data import load_dataset; print(len(load_dataset('cifar10', '$DATA').train_y), 'train images')" 2>&1 | tail -1

search() {  # name, then search options
  local name=$1
  shift
  $py -m slt_deploy search --data cifar10 --data-dir "$DATA" --device "$DEVICE" --quiet \
    --out "$RUNS/$name" "$@"
}

# smoke: the compiled gate kernels on CUDA, channel gates, edge-popup; 3 steps each
COMPILE=--compile
if ! search smoke-compile --model conv4 --target-sparsity 0.9 --max-steps 3 --compile \
  >"$LOGS/smoke.log" 2>&1; then
  echo "compiled kernels failed on CUDA (see smoke.log): runs use --no-compile"
  COMPILE=--no-compile
fi
search smoke-channel --model conv6 --granularity channel --target-sparsity 0.5 --max-steps 3 \
  >>"$LOGS/smoke.log" 2>&1 || echo "channel smoke failed"
search smoke-ep --model resnet18 --method edge-popup --target-sparsity 0.9 --max-steps 3 \
  >>"$LOGS/smoke.log" 2>&1 || echo "edge-popup smoke failed"
tail -3 "$LOGS/smoke.log"

run() {  # name, then search options; cut off at BUDGET seconds
  local name=$1
  shift
  local start=$SECONDS
  timeout "$BUDGET" $py -m slt_deploy search --data cifar10 --data-dir "$DATA" --device "$DEVICE" \
    --quiet --out "$RUNS/$name" "$@" >"$LOGS/$name.log" 2>&1
  echo "$name: exit $? after $((SECONDS - start)) s"
}
run conv4-gates-90 --model conv4 --target-sparsity 0.9 --epochs 30 $COMPILE &
run conv4-ep-90 --model conv4 --method edge-popup --target-sparsity 0.9 --epochs 30 &
run conv4-gates-50 --model conv4 --target-sparsity 0.5 --epochs 30 $COMPILE &
run conv4-ep-50 --model conv4 --method edge-popup --target-sparsity 0.5 --epochs 30 &
run conv4-dense --model conv4 --method dense --epochs 30 &
run resnet18-gates-90 --model resnet18 --target-sparsity 0.9 --epochs 15 $COMPILE &
run resnet18-ep-90 --model resnet18 --method edge-popup --target-sparsity 0.9 --epochs 15 &
run conv6-channel-50 --model conv6 --granularity channel --target-sparsity 0.5 --epochs 30 &
run conv6-channel-70 --model conv6 --granularity channel --target-sparsity 0.7 --epochs 30 &
run conv6-dense --model conv6 --method dense --epochs 30 &
wait

[ "${ARCH:-1}" = 1 ] && timeout 120 $py bench/architectures.py --device "$DEVICE" --variant bf16 --batch-size 128 --steps 10 \
  --models conv4,conv6,resnet18,resnet50,wrn-28-10,vit_tiny,vit_small,swin_tiny \
  --json "$OUT/architectures-cuda-bf16.json" 2>&1 | tee "$LOGS/architectures.log"
[ "${ARCH:-1}" = 1 ] && for variant in fp32 bf16-cl; do
  timeout 30 $py bench/architectures.py --device "$DEVICE" --variant $variant --batch-size 128 \
    --steps 10 --models resnet18 2>&1 | tail -1 | tee -a "$LOGS/architectures.log"
done

for dir in "$RUNS"/*/; do
  name=$(basename "$dir")
  case $name in smoke-* | logs) continue ;; esac
  [ -f "$dir/ticket.safetensors" ] && $py -m slt_deploy export "$dir" --format slt \
    --out "$dir/ticket.slt" >/dev/null 2>&1 &
done
wait
for dir in "$RUNS"/*/; do
  rm -f "$dir/checkpoint.safetensors" "$dir/.lock"
  case $(basename "$dir") in conv6-channel-*) ;; *) rm -f "$dir/ticket.safetensors" ;; esac
done
tar -czf "$OUT/results.tar.gz" -C "$RUNS" --exclude 'smoke-*' .
$py - "$RUNS" <<'EOF'
import json, sys, pathlib
for d in sorted(pathlib.Path(sys.argv[1]).iterdir()):
    if d.name.startswith("smoke") or d.name == "logs":
        continue
    s = d / "summary.json"
    if s.is_file():
        r = json.loads(s.read_text())
        print(f"{d.name}: acc {r['test_accuracy']:.4f} sparsity {r['sparsity']:.3f} "
              f"epochs {r['epochs']} {r['wall_seconds']:.0f} s")
    else:
        lines = (d / "metrics.jsonl").read_text().splitlines() if (d / "metrics.jsonl").is_file() else []
        last = json.loads(lines[-1]) if lines else {}
        print(f"{d.name}: cut off after {len(lines)} epochs, last test {last.get('test_accuracy')}")
EOF
