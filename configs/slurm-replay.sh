#!/bin/bash
# Reprocess a whole experiment on SLURM: one output file per scan, each scan a dask
# task; the workers are SLURM jobs that dask-jobqueue submits (pip install
# 'peakstream[cluster]' in an environment the compute nodes see). This driver job
# only schedules; it can also run on a login node as it stands (without sbatch).
# Run it again after a crash or a timeout: finished scans are skipped.
#
#   sbatch configs/slurm-replay.sh /data/visitor/ma1234/id11/Si/Si_dty.h5 /data/ma1234/peaks
#
# The worker jobs' settings come from the environment (sbatch passes it on), defaults:
# PEAKSTREAM_QUEUE=nice PEAKSTREAM_CORES=16 PEAKSTREAM_MEMORY=64GB
# PEAKSTREAM_WALLTIME=02:00:00 PEAKSTREAM_JOBS=8, e.g.
#   PEAKSTREAM_QUEUE=id11 PEAKSTREAM_MEMORY=16GB sbatch --partition=id11 configs/slurm-replay.sh ...
#
#SBATCH --job-name=peakstream-replay
#SBATCH --partition=nice
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --time=12:00:00
#SBATCH --output=peakstream-replay-%j.log

MASTER=${1:?the Bliss master file of the scans}
OUTPUT=${2:?the output directory}
PEAKSTREAM=${PEAKSTREAM:-peakstream}
CONFIG=${CONFIG:-$HOME/peakstream/id11.toml}  # the chain, as for `peakstream run`

# every scan entry of the master file that holds measurement/eiger (/1.1, /2.1, ...);
# by default 8 jobs of 16 single-threaded workers each
"$PEAKSTREAM" replay "$MASTER" --images measurement/eiger \
    --motor omega=measurement/rot_center --counter monitor=measurement/fpico6 \
    --config "$CONFIG" --output "$OUTPUT" \
    --cluster slurm --slurm-queue "${PEAKSTREAM_QUEUE:-nice}" \
    --slurm-cores "${PEAKSTREAM_CORES:-16}" --slurm-memory "${PEAKSTREAM_MEMORY:-64GB}" \
    --slurm-walltime "${PEAKSTREAM_WALLTIME:-02:00:00}" --slurm-jobs "${PEAKSTREAM_JOBS:-8}"
