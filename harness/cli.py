"""``qsweep``: the Hydra app that runs a quantization sweep (also ``python -m harness``).

Every knob is a Hydra override of the config tree in ``conf/`` (installed as
the package ``harness.conf``)::

    qsweep                                              # default sweep: digits_cnn, grid, numpy executor
    qsweep model=digits_mlp search.space.nbits=[8,4,2] search.space.mode=[linear,kmeans_lut]
    qsweep model.path=my.mlmodel data=npz data.path=test.npz search.max_accuracy_drop=0.01
    qsweep search=tpe search.n_trials=60 storage.url=postgresql://me@db/qsweep study.name=shared
    qsweep --cfg job                                     # print the composed config and exit
    qsweep --help                                        # groups and options

Errors a user can cause (bad model, data, config or storage) are printed as one
``qsweep: error: ...`` message without a traceback and exit with status 2;
Ctrl-C writes the results of finished trials and exits with status 130.

The metric is a config node (``metric.name``, ``metric.output``, ...); the old
spelling ``metric=<name>`` is read as ``metric.name=<name>`` with a note.
"""
from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from harness.config import register_configs

log = logging.getLogger("qsweep")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def config_dir() -> str:
    """The config tree: ``conf/`` of a source checkout, else the installed ``harness.conf``."""
    source = Path(__file__).resolve().parent.parent / "conf"
    if (source / "config.yaml").is_file():
        return str(source)
    return "pkg://harness.conf"


register_configs()
OmegaConf.register_new_resolver("qsweep_pid", lambda: str(os.getpid()), replace=True)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _app(cfg: DictConfig) -> None:
    from harness.errors import USER_ERRORS
    from harness.sweep import run_sweep

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        result = run_sweep(cfg, run_dir)
    except USER_ERRORS as e:
        log.debug("user error", exc_info=True)
        print(f"qsweep: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
    if result.interrupted:
        raise SystemExit(EXIT_INTERRUPTED)


_OLD_METRIC = re.compile(r"^\+{0,2}metric=(.*)$")


def respell(argv: list[str]) -> list[str]:
    """``metric=<name>`` (the spelling before the metric became a config node) as ``metric.name=<name>``."""
    out = []
    for arg in argv:
        m = _OLD_METRIC.match(arg)
        if m:
            new = f"metric.name={m.group(1)}"
            print(f"qsweep: note: {arg} is now spelled {new} (the metric is a config node: metric.name, "
                  f"metric.output, metric.threshold, metric.fn); running with {new}.", file=sys.stderr, flush=True)
            arg = new
        out.append(arg)
    return out


def main() -> None:
    """Console-script entry point (``qsweep``)."""
    sys.argv[1:] = respell(sys.argv[1:])
    _app()


if __name__ == "__main__":  # pragma: no cover
    main()
