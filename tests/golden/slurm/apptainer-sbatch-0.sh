#!/bin/bash

# Parameters
#SBATCH --array=0-2%3
#SBATCH --chdir={REPO}
#SBATCH --cpus-per-task=8
#SBATCH --error={RUNS}/appt/.submitit/%A_%a_0_log.err
#SBATCH --gpus-per-node=1
#SBATCH --job-name=tk-appt
#SBATCH --mem=32GB
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output={RUNS}/appt/.submitit/%A_%a_0_log.out
#SBATCH --signal=USR2@120
#SBATCH --time=720
#SBATCH --wckey=''

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output {RUNS}/appt/.submitit/%A_%a_%t_log.out --error {RUNS}/appt/.submitit/%A_%a_%t_log.err {PYTHON} -u -m submitit.core._submit {RUNS}/appt/.submitit
