"""Soak: three workers, a sampled search of 300+ trials, a worker SIGKILLed twice and the database restarted once.

Run ``python -m harness.bench soak [--trials 300] [--search tpe|random] [--model digits_mlp] [--out DIR]``.
It starts a throwaway PostgreSQL server (:mod:`harness.bench.pgserver`; the
server binaries are needed), then three real ``qsweep`` worker processes on one
study. While they run, by the study's progress, it

1. SIGKILLs worker 0 while it has a trial RUNNING (at 20 % of the budget) and starts it again
   (the worker is frozen with SIGSTOP first; it is killed only when the study shows it mid-trial,
   otherwise it is let go on and caught again a moment later);
2. restarts the server with ``pg_ctl restart -m fast`` (at 45 %);
3. SIGKILLs worker 0 again mid-trial (at 70 %) and starts it again.

At the end it checks the study: every trial COMPLETE, FAIL with its error (it
raised) or with its retry (its worker died), or PRUNED; nothing RUNNING or
WAITING; the budget used (``search.n_trials``, plus at most one trial per other
worker that asked at the same moment at the end); no plan evaluated twice (one evaluating trial
per plan hash); and prints the figures (trials by state, evaluations, reuses,
retries, outages the workers rode out, worker exit codes, wall time). Exit status
0 when every check holds. The workers' logs and run directories stay under ``--out``.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

#: The space the workers search (digits_mlp: fast trials, 7 nbits x 4 modes x 3 x 2 selector values).
SPACE = ["selector.minimum_matrix_weight_count=[0,1000,5000]", "selector.skip_layer_types=[[],[bias]]"]


def _worker_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Fleet:
    """The worker processes, each restartable; their logs under ``out``."""

    def __init__(self, args: Sequence[str], out: Path, n: int):
        self.args, self.out = list(args), out
        self.procs: list[subprocess.Popen] = []
        self.generation = [0] * n
        self.exits: list[tuple[int, int, int]] = []  # (worker, generation, return code)
        for i in range(n):
            self.procs.append(self._start(i))

    def _start(self, i: int) -> subprocess.Popen:
        g = self.generation[i]
        log = (self.out / f"worker{i}-{g}.log").open("w")
        run_dir = self.out / f"worker{i}-{g}"
        return subprocess.Popen(_worker_command(self.args + [f"hydra.run.dir={run_dir}"]), cwd=self.out, env=_env(),
                                stdout=log, stderr=subprocess.STDOUT, text=True)

    def kill_and_restart(self, i: int) -> None:
        p = self.procs[i]
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        self.exits.append((i, self.generation[i], p.returncode))
        self.generation[i] += 1
        self.procs[i] = self._start(i)

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for i, p in enumerate(self.procs):
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
            self.exits.append((i, self.generation[i], p.returncode))

    def logs(self) -> list[str]:
        return [p.read_text() for p in sorted(self.out.glob("worker*.log"))]

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=60)


def _open(url: str) -> Any:
    from omegaconf import OmegaConf

    from harness.config import StorageConfig
    from harness.study import open_storage

    return open_storage(OmegaConf.structured(StorageConfig(url=url, heartbeat_interval=1, grace_period=5)))


def _study(storage: Any, name: str) -> Any:
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def _pid_of(worker: subprocess.Popen) -> int:
    return worker.pid


def _dead_trials(study: Any, killed: Sequence[str]) -> list[int]:
    """Trials whose worker (``machine#pid``) was killed: FAIL without an error of their own."""
    return [t.number for t in study.get_trials(deepcopy=False)
            if t.state.name == "FAIL" and t.user_attrs.get("failure") != "error"
            and str(t.system_attrs.get("qsweep:worker", "")).rpartition("#")[2] in killed]


def check(study: Any, n_trials: int, workers: int = 3) -> tuple[dict[str, Any], list[str]]:
    """The soak's figures and the list of broken rules (empty: every check holds)."""
    from optuna.trial import TrialState

    from harness.study import budget_used, retried_numbers

    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    retried = retried_numbers(trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    evaluated = [t.user_attrs.get("plan_hash") for t in complete if "reused_from" not in t.user_attrs]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    raised = [t for t in failed if t.user_attrs.get("failure") == "error"]
    dead = [t for t in failed if t.user_attrs.get("failure") != "error"]
    problems = []
    if states.get("RUNNING") or states.get("WAITING"):
        problems.append(f"{states.get('RUNNING', 0)} RUNNING and {states.get('WAITING', 0)} WAITING trial(s) left")
    if len(evaluated) != len(set(evaluated)):
        twice = [h for h, n in Counter(evaluated).items() if n > 1]
        problems.append(f"{len(twice)} plan(s) evaluated twice")
    unknown = {h for h in (t.user_attrs.get("plan_hash") for t in complete)} - set(evaluated)
    if unknown:
        problems.append(f"{len(unknown)} plan(s) reused but never evaluated")
    lost = [t.number for t in dead if t.number not in retried]
    if lost:
        problems.append(f"dead trial(s) {lost} were not queued again")
    no_error = [t.number for t in raised if not t.user_attrs.get("error")]
    if no_error:
        problems.append(f"failed trial(s) {no_error} have no error message")
    used = budget_used(trials)
    # The budget check of a sampled search is not atomic across workers: near the end, workers that ask at
    # the same moment may each start one more trial (at most one each).
    if not n_trials <= used < n_trials + workers:
        problems.append(f"the budget used is {used}, not search.n_trials={n_trials} (+ at most {workers - 1})")
    figures = {"trials": len(trials), "states": dict(states), "budget_used": used,
               "evaluated": len(evaluated), "distinct_plans": len(set(evaluated)),
               "reused": len(complete) - len(evaluated), "raised": len(raised), "dead_and_retried": len(dead) - len(lost),
               "pruned": states.get("PRUNED", 0)}
    return figures, problems


def soak(out: Path, n_trials: int = 300, search: str = "tpe", model: str = "digits_mlp", workers: int = 3,
         timeout: float = 3600.0) -> tuple[dict[str, Any], list[str]]:
    """Run the soak (see module docstring) in ``out``; return its figures and broken rules."""
    from optuna.trial import TrialState

    from harness.bench.pgserver import PgServer

    out.mkdir(parents=True, exist_ok=True)
    server = PgServer().start()
    fleet = None
    t0 = time.monotonic()
    events: list[str] = []
    killed: list[str] = []
    try:
        name = "soak"
        args = [f"model={model}", f"search={search}", f"search.n_trials={n_trials}", *SPACE, "progress=false",
                "report.enabled=false", f"storage.url={server.url}", f"study.name={name}",
                "storage.heartbeat_interval=1", "storage.grace_period=5", "storage.retry_s=120", "storage.max_retry=5"]
        fleet = Fleet(args, out, workers)
        storage = _open(server.url)
        schedule = [(0.20, "kill"), (0.45, "restart"), (0.70, "kill")]
        deadline = time.monotonic() + timeout
        while schedule and time.monotonic() < deadline:
            time.sleep(0.3)
            study = _study(storage, name)
            if study is None:
                continue
            trials = study.get_trials(deepcopy=False)
            finished = sum(1 for t in trials if t.state.is_finished())
            at, what = schedule[0]
            if finished < at * n_trials:
                continue
            if what == "restart":
                took = server.restart()
                events.append(f"{time.monotonic() - t0:6.1f} s: server restarted (pg_ctl restart -m fast, {took:.1f} s) "
                              f"at {finished} finished trials")
                schedule.pop(0)
                continue
            pid = _pid_of(fleet.procs[0])
            if fleet.procs[0].poll() is not None:
                raise RuntimeError(f"worker 0 exited ({fleet.procs[0].returncode}) before it was killed; "
                                   f"see {out}/worker0-*.log")
            os.kill(pid, signal.SIGSTOP)  # frozen: what the study shows of it cannot change any more
            time.sleep(0.2)
            mine = [t.number for t in _study(storage, name).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                    if str(t.system_attrs.get("qsweep:worker", "")).endswith(f"#{pid}")]
            if not mine:
                os.kill(pid, signal.SIGCONT)  # between trials: let it go on and catch it mid-trial
                continue
            fleet.kill_and_restart(0)
            killed.append(str(pid))
            events.append(f"{time.monotonic() - t0:6.1f} s: worker 0 (pid {pid}) SIGKILLed mid-trial "
                          f"{mine[0]} at {finished} finished trials, started again")
            schedule.pop(0)
        fleet.wait(max(60.0, deadline - time.monotonic()))
        study = _study(storage, name)
        figures, problems = check(study, n_trials, workers)
        logs = fleet.logs()
        figures["outages_seen"] = sum(t.count("lost the study database") for t in logs)
        figures["back_lines"] = sum(t.count("is back after") for t in logs)
        figures["tracebacks"] = sum(t.count("Traceback") for t in logs)
        figures["worker_exits"] = [f"w{i}.{g}:{rc}" for i, g, rc in fleet.exits]
        figures["wall_s"] = round(time.monotonic() - t0, 1)
        figures["events"] = events
        figures["killed_trials"] = _dead_trials(study, killed)
        if len(figures["killed_trials"]) != len(killed):
            problems.append(f"the {len(killed)} kills left dead trials {figures['killed_trials']}")
        if len(events) != 3:
            problems.append(f"only {len(events)} of the 3 faults happened: {events}")
        final = [rc for i, g, rc in fleet.exits if rc != -signal.SIGKILL]
        if any(rc != 0 for rc in final):
            problems.append(f"worker exits {figures['worker_exits']} (every worker not killed must exit 0)")
        if figures["tracebacks"]:
            problems.append(f"{figures['tracebacks']} traceback(s) in the worker logs")
        return figures, problems
    finally:
        if fleet is not None:
            fleet.stop_all()
        server.remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench soak", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300, help="search.n_trials (default 300)")
    parser.add_argument("--search", default="tpe", choices=["tpe", "random", "nsga2"])
    parser.add_argument("--model", default="digits_mlp")
    parser.add_argument("--out", type=Path, default=None, help="folder for the workers' logs and run directories")
    args = parser.parse_args(argv)
    from harness.bench.pgserver import missing

    why = missing()
    if why:
        print(f"soak: {why}", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="qsweep-soak-"))
    figures, problems = soak(out, args.trials, args.search, args.model)
    print(f"soak: {args.trials} trials, search={args.search}, model={args.model}, 3 workers on PostgreSQL")
    for e in figures.pop("events"):
        print("  " + e)
    for k, v in figures.items():
        print(f"  {k:<18} {v}")
    print(f"  logs and run directories: {out}")
    if problems:
        print("FAILED: " + "; ".join(problems))
        return 1
    print("OK: every trial COMPLETE, FAIL with its error or retry, or PRUNED; nothing RUNNING; no plan evaluated "
          "twice")
    return 0
