#!/bin/bash
# Live peakstream workers on SLURM nodes: they join a running `peakstream run` or
# `peakstream daemon` whose config has
#     [workers]
#     kind = "processes"
#     endpoint = "tcp://0.0.0.0:7100"      # every interface of the processor host
#     keys = "/etc/peakstream/keys"        # made by `peakstream keys /etc/peakstream/keys`
# and take per-point work from it (credits, heartbeats, reassignment: a node that dies
# loses nothing). Copy server.key, worker.key and worker.key_secret to $KEYS first.
#
#   sbatch --export=ALL,PROCESSOR=tcp://id11-processor:7100 configs/slurm-workers.sh
#   squeue -u $USER                 scancel JOBID   (workers leave; their points go elsewhere)
#
#SBATCH --job-name=peakstream-workers
#SBATCH --partition=nice
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --time=08:00:00
#SBATCH --output=peakstream-workers-%j.log

PROCESSOR=${PROCESSOR:-tcp://id11-processor:7100}
KEYS=${KEYS:-$HOME/.peakstream/keys}
PEAKSTREAM=${PEAKSTREAM:-peakstream}

# one chain thread per core; --orphan 0: wait for the processor as long as the job lasts
srun "$PEAKSTREAM" worker --connect "$PROCESSOR" --keys "$KEYS" \
    --threads "$SLURM_CPUS_PER_TASK" --orphan 0
