#!/bin/bash
# bash experiments/slurm/torchrun.sh 4 -c experiments/cifar100/base.yaml -c experiments/cifar100/resnet32x4-resnet8x4.yaml -c experiments/method/kd.yaml
#
# `kdlab fit` with DDP over NPROC processes per node, started by torchrun (no SLURM needed).
# Lightning recognises torchrun's environment (TorchElasticEnvironment) and joins its process
# group; trainer.devices and trainer.num_nodes are set to match. Several nodes: run the same
# command on every node with NNODES, NODE_RANK and MASTER_ADDR set, e.g. on node 0 of 2:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 bash experiments/slurm/torchrun.sh 8 -c ...
# Any kdlab fit argument follows NPROC (CPU-only: add --trainer.accelerator=cpu, gloo is used).
set -euo pipefail
NPROC=${1:?usage: torchrun.sh NPROC [kdlab fit arguments...]}
shift
NNODES=${NNODES:-1}
exec torchrun --nnodes="$NNODES" --node_rank="${NODE_RANK:-0}" --nproc_per_node="$NPROC" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
    -m kdlab.cli fit "$@" --trainer.devices="$NPROC" --trainer.num_nodes="$NNODES" --trainer.strategy=ddp
