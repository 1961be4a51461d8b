"""``qsweep``: the Hydra app that runs a quantization sweep (also ``python -m harness``).

Every knob is a Hydra override of the config tree in ``conf/`` (installed as
the package ``harness.conf``)::

    qsweep                                              # default sweep: digits_cnn, grid, numpy executor
    qsweep model=digits_mlp search.space.nbits=[8,4,2] search.space.mode=[linear,kmeans_lut]
    qsweep model.path=my.mlmodel data=npz data.path=test.npz search.max_accuracy_drop=0.01
    qsweep search=tpe search.n_trials=60 storage.url=postgresql://me@db/qsweep study.name=shared
    qsweep --cfg job                                     # print the composed config and exit
    qsweep --help                                        # groups and options

Exit status (:data:`EXIT_CODES`): 0 done; 2 an error the user can fix (bad
model, data, config or storage), printed as one ``qsweep: error: ...`` line
without a traceback; 74 a file of the run directory cannot be written (disk
full, read-only); 75 the study database stayed away longer than
``storage.retry_s`` (run again later: the study keeps every finished trial);
130 / 143 / 129 stopped by Ctrl-C / SIGTERM / SIGHUP — the finished trials are
written, the trial in flight is queued again, and a closing line says so.

No secret reaches the console, ``qsweep.log`` or the run directory: the
console streams and every log record are masked (:func:`harness.secrets.mask`),
and the files Hydra writes into the run directory (``.hydra/``) are rewritten
masked before the sweep starts.

The metric is a config node (``metric.name``, ``metric.output``, ...); the old
spelling ``metric=<name>`` is read as ``metric.name=<name>`` with a note.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from harness import secrets
from harness.config import register_configs
from harness.errors import OutputError, StorageUnavailableError
from harness.shutdown import Stopped, handle_signals

log = logging.getLogger("qsweep")

EXIT_ERROR = 1
EXIT_USER_ERROR = 2
EXIT_OUTPUT_ERROR = 74  # sysexits.h EX_IOERR
EXIT_STORAGE_UNAVAILABLE = 75  # sysexits.h EX_TEMPFAIL: try again later
EXIT_INTERRUPTED = 130
#: Exit status by outcome (signals: 128 + the signal number).
EXIT_CODES = {"user error": EXIT_USER_ERROR, "cannot write the run directory": EXIT_OUTPUT_ERROR,
              "database unavailable": EXIT_STORAGE_UNAVAILABLE, "SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}


def config_dir() -> str:
    """The config tree: ``conf/`` of a source checkout, else the installed ``harness.conf``."""
    source = Path(__file__).resolve().parent.parent / "conf"
    if (source / "config.yaml").is_file():
        return str(source)
    return "pkg://harness.conf"


register_configs()
OmegaConf.register_new_resolver("qsweep_pid", lambda: str(os.getpid()), replace=True)


class MaskedStream:
    """A text stream that masks every write (:func:`harness.secrets.mask`); the rest is the wrapped stream's."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(secrets.mask(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class OutputCheck(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``): before Hydra creates the run (or sweep)
    directory, check it can be, so an unwritable folder is one clear error (status 74), not a traceback."""

    def _check(self, folder: Any) -> None:
        from harness.writes import check_creatable

        try:
            check_creatable(str(folder))
        except OutputError as e:
            _error(e)
            raise SystemExit(EXIT_OUTPUT_ERROR) from None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir)


def _error(message: Any) -> None:
    print(f"qsweep: error: {secrets.mask(message)}", file=sys.stderr, flush=True)


def _closing_line(stop: Stopped, result: Any, run_dir: Path) -> None:
    """What happened, after a stop signal: what was written, what was queued again."""
    if result is None:
        print(f"qsweep: {stop.description} outside the trial loop; the run directory {run_dir} may be incomplete. "
              "The study keeps every finished trial: run the same command again to resume.", file=sys.stderr,
              flush=True)
        return
    loop = result.loop
    done = int((result.trials["state"] == "COMPLETE").sum()) if not result.trials.empty else 0
    back = (f"trial(s) {', '.join(map(str, loop.requeued))} put back in the queue" if loop.requeued
            else "no trial was in flight")
    print(f"qsweep: {stop.description}: {done} finished trial(s) of study {result.study_name!r} written to "
          f"{run_dir}; {back}. Run the same command again to resume.", file=sys.stderr, flush=True)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _app(cfg: DictConfig) -> None:
    from harness.errors import USER_ERRORS
    from harness.sweep import run_sweep

    secrets.install_log_masking()
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    if hc.output_subdir:
        secrets.scrub_files(sorted((run_dir / str(hc.output_subdir)).glob("*.yaml")))
    if hc.mode is not None and hc.mode.name == "MULTIRUN":
        secrets.scrub_files(sorted(Path(hc.sweep.dir).glob("*.yaml")))
    result = None
    with handle_signals():
        try:
            result = run_sweep(cfg, run_dir)
        except KeyboardInterrupt as e:  # a stop signal outside the trial loop (start-up, writing)
            stop = Stopped.of(e)
            _closing_line(stop, None, run_dir)
            raise SystemExit(stop.exit_code) from None
        except StorageUnavailableError as e:
            _error(e)
            raise SystemExit(EXIT_STORAGE_UNAVAILABLE) from None
        except OutputError as e:
            _error(e)
            raise SystemExit(EXIT_OUTPUT_ERROR) from None
        except USER_ERRORS as e:
            log.debug("user error", exc_info=True)
            _error(e)
            raise SystemExit(EXIT_USER_ERROR) from None
        except Exception:  # noqa: BLE001 - a bug: the traceback, masked
            text = secrets.mask(traceback.format_exc())
            log.error("unexpected error:\n%s", text)
            print(text, file=sys.stderr, flush=True)
            raise SystemExit(EXIT_ERROR) from None
    if result.interrupted and result.loop.signal is not None:
        _closing_line(result.loop.signal, result, run_dir)
        raise SystemExit(result.loop.signal.exit_code)


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
    """Console-script entry point (``qsweep``): the app, with masked console streams."""
    secrets.register_environment()
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = MaskedStream(out), MaskedStream(err)
    sys.argv[1:] = respell(sys.argv[1:])
    try:
        _app()
    finally:
        sys.stdout, sys.stderr = out, err


if __name__ == "__main__":  # pragma: no cover
    main()
