"""Backends: one module each (local, slurm, beaker) behind the small interface of `base.Backend`."""
