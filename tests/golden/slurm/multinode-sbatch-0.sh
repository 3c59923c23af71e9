#!/bin/bash

# Parameters
#SBATCH --chdir={REPO}
#SBATCH --cpus-per-task=16
#SBATCH --error={RUNS}/multi/.submitit/%j_0_log.err
#SBATCH --gpus-per-node=4
#SBATCH --job-name=tk-multi
#SBATCH --mem=64GB
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output={RUNS}/multi/.submitit/%j_0_log.out
#SBATCH --partition=gpu
#SBATCH --signal=USR2@120
#SBATCH --time=120
#SBATCH --wckey=''

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output {RUNS}/multi/.submitit/%j_%t_log.out --error {RUNS}/multi/.submitit/%j_%t_log.err {PYTHON} -u -m submitit.core._submit {RUNS}/multi/.submitit
