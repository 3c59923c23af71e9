#!/bin/bash

# Parameters
#SBATCH --account=lab
#SBATCH --array=0-3%2
#SBATCH --chdir={REPO}
#SBATCH --cpus-per-task=2
#SBATCH --error={RUNS}/cpu4/.submitit/%A_%a_0_log.err
#SBATCH --job-name=tk-cpu4
#SBATCH --mem=8GB
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output={RUNS}/cpu4/.submitit/%A_%a_0_log.out
#SBATCH --partition=debug
#SBATCH --qos=normal
#SBATCH --signal=USR2@120
#SBATCH --time=30
#SBATCH --wckey=''

# setup
module load cuda/12.1
export HF_HOME=/scratch/hf

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output {RUNS}/cpu4/.submitit/%A_%a_%t_log.out --error {RUNS}/cpu4/.submitit/%A_%a_%t_log.err {PYTHON} -u -m submitit.core._submit {RUNS}/cpu4/.submitit
