#!/usr/bin/env bash
# The GPU figures of docs/performance.md in one run, under 8 minutes on one H100/H200:
#
#   python ../shared/data/prepare_cifar10.py /tmp/cifar10                 # once
#   bash benchmarks/gpu_check.sh /tmp/cifar10 runs/gpu_check               # on a machine with CUDA
#   bash benchmarks/gpu_check.sh /tmp/cifar10 runs/gpu_check --dry         # every step, tiny, on the CPU
#
# Steps (each log in OUT/<step>.log, its seconds in OUT/seconds.txt):
#   kd_step     images/s of a KD step against its parts (kd_step.py), two pairs, batch 128
#   kd_epoch    online vs cached KD epoch on the real CIFAR-10 (kd_epoch.py)
#   end_to_end  plain PyTorch loop vs kdlab fit, teacher/vanilla/KD, 3 epochs (end_to_end.py)
#   fit_fast    kdlab fit of the CIFAR-10 KD recipe with bf16 and FastPaths compile
#               (experiments/trainer/gpu_fast.yaml), 3 epochs, from end_to_end's teacher
# --dry runs the same commands on the CPU with a few steps and images, small networks and no
# compile, so that CI keeps the script working without a GPU (tests/test_gpu_check.py).
set -euo pipefail
root=$(realpath "${1:?usage: gpu_check.sh CIFAR10_ROOT [OUT] [--dry]}")
out=$(realpath -m "${2:-runs/gpu_check}")
dry=${3:-}
cd "$(dirname "$0")/.."
bin=${KDLAB_BIN:-.venv/bin}
mkdir -p "$out"
: > "$out/seconds.txt"

if [[ $dry == --dry ]]; then
  device=cpu accelerator=cpu steps=2 repeats=1 epochs=1 fraction=0.05 batch=16
  pairs=(--pair resnet20:resnet8) epoch_pair=resnet20:resnet8
  no_compile=(--trainer.callbacks.0.init_args.compile_teacher=false --trainer.callbacks.0.init_args.compile_student=false)
else
  device=cuda accelerator=gpu steps=50 repeats=3 epochs=3 fraction=1.0 batch=128 no_compile=()
  pairs=(--pair resnet56:resnet20 --pair resnet32x4:resnet8x4) epoch_pair=resnet56:resnet20
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
fi

step() {
  local name=$1 start=$SECONDS
  shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$out/$name.log"
  echo "$name $((SECONDS - start))" | tee -a "$out/seconds.txt"
}

step kd_step "$bin/python" benchmarks/kd_step.py --device "$device" --root "$root" --num-classes 10 \
  "${pairs[@]}" --batch-size "$batch" --steps "$steps" --warmup 2 --repeats "$repeats" --no-memory
step kd_epoch "$bin/python" benchmarks/kd_epoch.py --device "$device" --root "$root" \
  --pair "$epoch_pair" --batch-size "$batch" --train-fraction "$fraction" --repeats 1
step end_to_end "$bin/python" benchmarks/end_to_end.py --device "$device" --root "$root" \
  --epochs "$epochs" --train-fraction "$fraction" --seeds 0 --out "$out/end_to_end"
step fit_fast "$bin/kdlab" fit -c experiments/cifar10/base.yaml \
  -c experiments/cifar10/resnet20-resnet8.yaml -c experiments/method/kd.yaml -c experiments/trainer/gpu_fast.yaml \
  --data.init_args.root="$root" --data.init_args.train_fraction="$fraction" \
  --trainer.max_epochs="$epochs" --trainer.accelerator="$accelerator" --trainer.devices=1 \
  --model.init_args.teacher_weights="$out/end_to_end/kdlab/seed0/teacher/checkpoints/last.ckpt" \
  --trainer.default_root_dir="$out/fit_fast" --trainer.enable_progress_bar=false "${no_compile[@]}"
echo "done: $out"
