#!/bin/bash

# Parameters
#SBATCH --chdir={REPO}
#SBATCH --cpus-per-task=8
#SBATCH --error={TMP}/runs/containerised/.submitit/%j_0_log.err
#SBATCH --gpus-per-node=2
#SBATCH --job-name=tk-containerised
#SBATCH --mem=64GB
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output={TMP}/runs/containerised/.submitit/%j_0_log.out
#SBATCH --partition=gpu
#SBATCH --signal=USR2@120
#SBATCH --time=240
#SBATCH --wckey=''

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output {TMP}/runs/containerised/.submitit/%j_%t_log.out --error {TMP}/runs/containerised/.submitit/%j_%t_log.err {PYTHON} -u -m submitit.core._submit {TMP}/runs/containerised/.submitit
