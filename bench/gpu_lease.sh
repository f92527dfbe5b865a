#!/usr/bin/env bash
# Everything this project measures on a CUDA GPU, as one script for one short lease.
# The lent machines have 2 CPU cores, and small CIFAR networks are bound by kernel launches,
# so the work runs in three lanes side by side, after the deployment measurements, which go
# first (bench/gpu_deploy.py: ORT CUDA fp32/fp16 vs torch 2:4 vs torch CSR on ViT-B/16's
# linears, channel-shrunk ResNet-18 vs dense; ~2 minutes; there were no GPU inference numbers), (more lanes only share the two cores), each
# lane's runs one after another, all cut off at one deadline (a cut-off run keeps its
# per-epoch metrics.jsonl; a cut-off sweep keeps its finished cells):
#   lane 1: the Conv-4 CIFAR-10 sweep for docs/evidence.md, continued from the cells already in
#           bench/results/sweeps/cifar10-conv4 (finished cells are skipped; seed-major, so the
#           first seeds' curves are whole);
#   lane 2: Conv-4 gates at 90% with the settings docs/architectures.md suspects (σ annealed
#           to 0.1, μ₀ = 1.0, lr 0.03, σ 0.25), then ResNet-18 gates vs edge-popup at 50%;
#   lane 3: ResNet-18 with --channels-last first (the fix of the fused-Adam stride error, so
#           far tested on CPU only), then Conv-6 channel+unstructured with 70% of the network
#           physically removed (--target-scope structure; channel gates alone reached 35%);
#   then:   ResNet-18 gates step time in fp32, bf16 and bf16 + channels-last.
#
#   bench/gpu_lease.sh CIFAR10_TAR OUT_DIR [SECONDS]
#
# Run from the repository root; needs torch with CUDA, timm and the package's dependencies
# (PYTHONPATH is set to the checkout, nothing is installed). Results: OUT_DIR/results.tar.gz
# (per run: summary.json, metrics.jsonl, config.json; Conv-6 tickets; logs/) and the printed
# summary. Few files on purpose: a lease returns few.
# Dry run of the script itself on a CPU:
#   DEVICE=cpu EXTRA="--subset 512 --max-steps 4" bench/gpu_lease.sh DATA /tmp/out 120
set -u
DATA=$1
OUT=$2
BUDGET=${3:-480}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}
DEADLINE=$((SECONDS + BUDGET - 45)) # the step-time check after the lanes needs ~40 s
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 SLT_DEPLOY_CACHE=/tmp/slt-cache OMP_NUM_THREADS=1
RUNS=/tmp/gpu-runs
LOGS=$RUNS/logs
rm -rf "$RUNS"
mkdir -p "$LOGS"
py=python3

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $py -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
  nproc; } 2>&1 | tee "$LOGS/machine.txt"

# the decoded uint8 cache, once, before the lanes share it
$py -c "from slt_deploy.data import load_dataset; print(len(load_dataset('cifar10', '$DATA').train_y), 'train images')" 2>&1 | tail -1

left() { echo $((DEADLINE - SECONDS)); }

# deployment first: inference numbers need minutes, not the whole lease
deploy_start=$SECONDS
DRY=""
[ "$DEVICE" = cpu ] && DRY="--dry-run"
# shellcheck disable=SC2086
timeout 240 $py bench/gpu_deploy.py --out "$RUNS/deploy" --data "$DATA" --seconds 0.5 $DRY \
  >"$LOGS/deploy.log" 2>&1
echo "deploy: exit $? after $((SECONDS - deploy_start)) s"
rm -rf "$RUNS/deploy/work"

run() {  # name, then search options; cut off at the deadline
  local name=$1
  shift
  local start=$SECONDS
  if [ "$(left)" -lt 30 ]; then
    echo "$name: not started (deadline)"
    return
  fi
  # shellcheck disable=SC2086
  timeout "$(left)" $py -m slt_deploy search --data cifar10 --data-dir "$DATA" --device "$DEVICE" \
    --quiet --out "$RUNS/$name" "$@" $EXTRA >"$LOGS/$name.log" 2>&1
  echo "$name: exit $? after $((SECONDS - start)) s"
}

lane_sweep() {
  local start=$SECONDS
  mkdir -p "$RUNS/sweep-conv4"
  cp -r bench/results/sweeps/cifar10-conv4/cells bench/results/sweeps/cifar10-conv4/sweep.json \
    "$RUNS/sweep-conv4/" 2>/dev/null
  # shellcheck disable=SC2086
  timeout "$(left)" $py -m slt_deploy sweep --model conv4 --data cifar10 --data-dir "$DATA" \
    --device "$DEVICE" --methods gates:stg,gates:hard-concrete,edge-popup,dense --sparsities 0.5,0.9,0.98 \
    --seeds 0,1,2 --epochs 10 --jobs 1 --quiet --out "$RUNS/sweep-conv4" $EXTRA \
    >"$LOGS/sweep-conv4.log" 2>&1
  echo "sweep-conv4: exit $? after $((SECONDS - start)) s"
}

lane_tuning() {
  run conv4-gates-90-anneal --model conv4 --target-sparsity 0.9 --epochs 10 --sigma-final 0.1
  run conv4-gates-90-mu1 --model conv4 --target-sparsity 0.9 --epochs 10 --gate-init 1.0
  run conv4-gates-90-lr03 --model conv4 --target-sparsity 0.9 --epochs 10 --lr 0.03
  run conv4-gates-90-sigma025 --model conv4 --target-sparsity 0.9 --epochs 10 --sigma 0.25
  run resnet18-gates-50 --model resnet18 --target-sparsity 0.5 --epochs 10
  run resnet18-ep-50 --model resnet18 --method edge-popup --target-sparsity 0.5 --epochs 10
}

lane_channel() {
  run resnet18-gates-90-cl --model resnet18 --target-sparsity 0.9 --epochs 3 --channels-last
  run conv6-chu-struct-70 --model conv6 --granularity channel+unstructured --target-scope structure \
    --target-sparsity 0.7 --epochs 15
}

lane_sweep &
lane_tuning &
lane_channel &
wait

for variant in fp32 bf16 bf16-cl; do
  timeout 20 $py bench/architectures.py --device "$DEVICE" --variant $variant --batch-size 128 \
    --steps 10 --models resnet18 2>&1 | grep "^| resnet18" | sed "s/^/$variant /" | tee -a "$LOGS/architectures.log"
done

find "$RUNS" \( -name 'checkpoint*.safetensors' -o -name .lock -o -name '*.tmp' \) -delete
for dir in "$RUNS"/*/ "$RUNS"/sweep-conv4/cells/*/; do
  case $(basename "$dir") in conv6-c*) ;; *) rm -f "$dir/ticket.safetensors" ;; esac
done
tar -czf "$OUT/results.tar.gz" -C "$RUNS" .
$py - "$RUNS" <<'EOF'
import json, sys, pathlib
root = pathlib.Path(sys.argv[1])
dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name not in ("logs", "sweep-conv4")]
dirs += sorted((root / "sweep-conv4" / "cells").glob("*"))
for d in dirs:
    s = d / "summary.json"
    if s.is_file():
        r = json.loads(s.read_text())
        print(f"{d.name}: acc {r['test_accuracy']:.4f} sparsity {r['sparsity']:.3f} "
              f"epochs {r['epochs']} {r['wall_seconds']:.0f} s")
    else:
        m = d / "metrics.jsonl"
        lines = m.read_text().splitlines() if m.is_file() else []
        last = json.loads(lines[-1]) if lines else {}
        print(f"{d.name}: cut off after {len(lines)} epochs, last test {last.get('test_accuracy')}")
EOF
