"""Evaluate a run, or compare the runs of multiruns.

``python evaluate.py run=<run dir> [episodes=N] [eval_policy=greedy|sample]`` evaluates the
run's last checkpoint and writes ``eval.json`` in the run dir (``eval_<policy>.json``, its
metrics named ``eval_<policy>/...``, for a policy other than the run's own), with the
checkpoint's ``iteration`` and the run's status (a note says when the run is still in
progress: ``compare`` uses an evaluation only while it is of the run's last checkpoint);
``python evaluate.py compare=<multirun dir>`` (or ``compare=[dir1,dir2]``) writes
``comparison.csv``, ``comparison.md``, ``comparison.png`` and ``curves.png`` into the first
dir (or ``out=<dir>``). Bad arguments are one line and exit code 2, and change no file.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, ListConfig

from procmem.app import compare_runs, evaluate_run, format_metrics
from procmem.app.cli import known_failure, run_hydra_main
from procmem.app.config import CONFIG_DIR
from procmem.app.evaluation import progress_note


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    if (cfg.run is None) == (cfg.compare is None):
        print("usage error: evaluate.py needs exactly one of run=<run dir> or "
              "compare=<multirun dir>", file=sys.stderr)
        sys.exit(2)
    try:
        if cfg.run is not None:
            result, written = evaluate_run(cfg.run, episodes=cfg.episodes, device=cfg.device,
                                           log=cfg.log, eval_policy=cfg.eval_policy)
            print(format_metrics(result))
            note = progress_note(result)
            if note is not None:
                print(note)
            print(f"{written.name}: {written}")
            return
        paths = list(cfg.compare) if isinstance(cfg.compare, ListConfig) else [cfg.compare]
        metrics = list(cfg.metrics) if cfg.metrics else None
        table, written = compare_runs(paths, cfg.out or paths[0], metrics, cfg.interval,
                                      report=cfg.report)
    except Exception as error:
        failure = known_failure(error)
        if failure is None:
            raise
        print(failure[0], file=sys.stderr)
        sys.exit(failure[1])
    print(table)
    for name, path in written.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    run_hydra_main(main)
