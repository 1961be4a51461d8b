"""No secret leaves the process: the storage password is nowhere in the run directory, qsweep.log, the console,
error messages (also of URLs SQLAlchemy cannot parse) or the study's attributes.

A PostgreSQL server with a role that must log in with a password (scram over
TCP) is started by the test, so every way of giving the password (in the URL,
``QSWEEP_STORAGE_PASSWORD``, ``storage.password_file``) really authenticates.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.faults.pgserver import server_or_skip
from tests.sweep.support import cli_command, cli_env, free_port, restored_logging

PASSWORD = "S3cr3t-Pw_81f"
#: Two points on digits_mlp (with the report, so report.html is checked too).
RUN = ["model=digits_mlp", "selector=all", "search.space.nbits=[8,4]", "search.space.mode=[linear]", "progress=false",
       "storage.heartbeat_interval=1", "storage.grace_period=4"]


@pytest.fixture(scope="module")
def pg_password():
    """``(server, url without the password)`` of a server whose role ``qsweeper`` needs :data:`PASSWORD`."""
    server = server_or_skip().start()
    try:
        yield server, server.add_password_user("qsweeper", PASSWORD)
    finally:
        server.remove()


def _with_password(url: str) -> str:
    return url.replace("qsweeper@", f"qsweeper:{PASSWORD}@")


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def _assert_clean(*texts: str | bytes, where: str = "") -> None:
    for t in texts:
        data = t.encode() if isinstance(t, str) else t
        assert PASSWORD.encode() not in data, f"the password leaked ({where})"


def _assert_run_dir_clean(run_dir: Path) -> None:
    files = _files(run_dir)
    names = {p.name for p in files}
    assert {"config.yaml", "environment.json", "trials.csv", "summary.json", "qsweep.log", "overrides.yaml",
            "hydra.yaml", "report.html"} <= names, names
    for p in files:
        _assert_clean(p.read_bytes(), where=str(p))


def _assert_study_clean(url: str, name: str) -> None:
    from tests.sweep.support import storage as open_test_storage

    storage = open_test_storage(_with_password(url))
    study = optuna.load_study(study_name=name, storage=storage)
    system = storage.get_study_system_attrs(study._study_id)
    blobs = [json.dumps(system, default=str), json.dumps(study.user_attrs, default=str)]
    for t in study.trials:
        blobs += [json.dumps(t.user_attrs, default=str), json.dumps(t.system_attrs, default=str), str(t.params)]
    _assert_clean(*blobs, where="study attributes")
    assert "qsweep:run" in system  # the record a rebuild needs is there (and clean)


def _cli(args, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(args), cwd=cwd, env=env or cli_env(), capture_output=True, text=True,
                          timeout=900)


@pytest.mark.postgres
def test_password_in_the_url_leaves_no_trace(pg_password, tmp_path):
    _, url = pg_password
    run_dir = tmp_path / "run"
    proc = _cli(RUN + [f"storage.url={_with_password(url)}", "study.name=in-url", f"hydra.run.dir={run_dir}"],
                tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_clean(proc.stdout, proc.stderr, where="console")
    assert "storage.url holds the database password" in proc.stdout  # the advice to use the environment
    _assert_run_dir_clean(run_dir)
    overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "storage.url=postgresql://qsweeper:***@127.0.0.1" in overrides, overrides
    env = json.loads((run_dir / "environment.json").read_text())
    assert any("qsweeper:***@" in a for a in env["argv"]) and "***" in env["storage"]
    _assert_study_clean(url, "in-url")


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["env", "file"])
def test_password_from_the_environment_or_a_file(pg_password, tmp_path, how):
    _, url = pg_password
    env, extra = cli_env(), []
    if how == "env":
        env["QSWEEP_STORAGE_PASSWORD"] = PASSWORD
    else:
        secret = tmp_path / "pw.txt"
        secret.write_text(PASSWORD + "\n")
        extra = [f"storage.password_file={secret}"]
    run_dir = tmp_path / "run"
    proc = _cli(RUN + [f"storage.url={url}", f"study.name=from-{how}", f"hydra.run.dir={run_dir}", *extra],
                tmp_path, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "storage.url holds the database password" not in proc.stdout
    _assert_clean(proc.stdout, proc.stderr, where="console")
    _assert_run_dir_clean(run_dir)
    _assert_study_clean(url, f"from-{how}")

    # without the password the server refuses, and says so without any secret
    env.pop("QSWEEP_STORAGE_PASSWORD", None)
    bad = _cli(RUN + [f"storage.url={url}", "study.name=nopw", f"hydra.run.dir={tmp_path / 'bad'}"], tmp_path, env)
    assert bad.returncode == 2 and "Cannot open the study storage" in bad.stderr, bad.stderr


@pytest.mark.postgres
def test_the_rebuild_command_leaves_no_trace(pg_password, tmp_path):
    _, url = pg_password
    first = _cli(RUN + [f"storage.url={_with_password(url)}", "study.name=rebuilt", f"hydra.run.dir={tmp_path / 'r'}"],
                 tmp_path)
    assert first.returncode == 0, first.stderr
    out = tmp_path / "again"
    proc = subprocess.run([sys.executable, "-m", "harness.report", "--study", "rebuilt", "--storage",
                           _with_password(url), str(out)], cwd=tmp_path, env=cli_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_clean(proc.stdout, proc.stderr, where="qsweep-report console")
    for p in _files(out):
        _assert_clean(p.read_bytes(), where=str(p))


def _qsweep_in_process(argv, capsys, cwd: Path, monkeypatch):
    from harness import cli

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["qsweep", *argv, f"hydra.run.dir={cwd / 'run'}", "progress=false",
                                      "report.enabled=false"])
    with pytest.raises(SystemExit) as exc, restored_logging():
        cli.main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.mark.parametrize("url", [
    f"postgresql://me:{PASSWORD}@db:notaport/x",  # SQLAlchemy cannot parse it
    f"postgresql://me:{PASSWORD}@127.0.0.1:{free_port()}/qsweep",  # nothing listens
    f"nosuchdb://me:{PASSWORD}@host/db",  # no such driver
])
def test_error_messages_mask_every_url(url, tmp_path, capsys, monkeypatch):
    code, out, err = _qsweep_in_process(["model=digits_mlp", f"storage.url={url}"], capsys, tmp_path, monkeypatch)
    assert code == 2, err
    assert err.startswith("qsweep: error: ") and "me:***@" in err, err
    _assert_clean(out, err, where="console")
    for p in _files(tmp_path / "run"):
        _assert_clean(p.read_bytes(), where=str(p))


@pytest.mark.postgres
def test_a_refused_experiment_masks_the_url(pg_password, tmp_path, capsys, monkeypatch):
    _, url = pg_password
    base = RUN + [f"storage.url={_with_password(url)}", "study.name=mismatch"]
    first = _cli(base + [f"hydra.run.dir={tmp_path / 'first'}"], tmp_path)
    assert first.returncode == 0, first.stderr
    code, out, err = _qsweep_in_process([a for a in base if not a.startswith("search.space.nbits")]
                                        + ["search.space.nbits=[8,2]"], capsys, tmp_path, monkeypatch)
    assert code == 2 and "was created for a different experiment" in err, err
    _assert_clean(out, err, where="console")


def test_tracebacks_and_log_records_are_masked(tmp_path, capsys):
    from harness.secrets import install_log_masking, mask, register

    install_log_masking()
    register("another-Secret-9")
    logger = logging.getLogger("qsweep.test")
    handler = logging.FileHandler(tmp_path / "t.log")
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"cannot reach postgresql://u:{PASSWORD}@h/db with another-Secret-9")
        except RuntimeError:
            logger.exception("failed for %s", f"mysql://root:{PASSWORD}@x/y")
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = (tmp_path / "t.log").read_text()
    assert "Traceback" in text and "u:***@h/db" in text and "root:***@x/y" in text
    assert PASSWORD not in text and "another-Secret-9" not in text
    assert mask(f"postgresql://me:{PASSWORD}@db:notaport/x") == "postgresql://me:***@db:notaport/x"
