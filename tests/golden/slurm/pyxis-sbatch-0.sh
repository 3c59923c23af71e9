#!/bin/bash

# Parameters
#SBATCH --array=0-1%2
#SBATCH --chdir={REPO}
#SBATCH --constraint=h100
#SBATCH --cpus-per-task=32
#SBATCH --error={RUNS}/pyxis/.submitit/%A_%a_0_log.err
#SBATCH --gpus-per-node=8
#SBATCH --job-name=tk-pyxis
#SBATCH --mem=500GB
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output={RUNS}/pyxis/.submitit/%A_%a_0_log.out
#SBATCH --partition=gpu
#SBATCH --signal=USR2@120
#SBATCH --time=1440
#SBATCH --wckey=''

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output {RUNS}/pyxis/.submitit/%A_%a_%t_log.out --error {RUNS}/pyxis/.submitit/%A_%a_%t_log.err {PYTHON} -u -m submitit.core._submit {RUNS}/pyxis/.submitit
