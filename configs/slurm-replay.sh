#!/bin/bash
# Reprocess a whole experiment on SLURM: one output file per scan, each scan a dask
# task; the workers are SLURM jobs that dask-jobqueue submits (pip install
# 'peakstream[cluster]' in an environment the compute nodes see). This driver job
# only schedules; it can also run on a login node as it stands (without sbatch).
# Run it again after a crash or a timeout: finished scans are skipped.
#
#   sbatch configs/slurm-replay.sh /data/visitor/ma1234/id11/Si/Si_dty.h5 /data/ma1234/peaks
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
# 8 jobs of 16 single-threaded workers each
"$PEAKSTREAM" replay "$MASTER" --images measurement/eiger \
    --motor omega=measurement/rot_center --counter monitor=measurement/fpico6 \
    --config "$CONFIG" --output "$OUTPUT" \
    --cluster slurm --slurm-queue nice --slurm-cores 16 --slurm-memory 64GB \
    --slurm-walltime 02:00:00 --slurm-jobs 8
