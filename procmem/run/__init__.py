"""Run machinery: the runner, checkpoints, logging, status, the run directory, reporters and
comparison of runs."""
