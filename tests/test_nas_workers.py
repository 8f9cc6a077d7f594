"""Two `edgekit nas-worker` processes sharing one study: on SQLite, and on a real PostgreSQL
server that this module starts on loopback.

The PostgreSQL fixture finds the server binaries (``/usr/lib/postgresql/*/bin``), installs
the Debian package ``postgresql`` with apt when they are missing (as root, or through
``sudo -n``), creates a throwaway cluster in a temporary directory with trust
authentication on a free port (as the ``postgres`` user when running as root, since initdb
refuses root), and stops and deletes it afterwards. It fails, rather than skips, when
PostgreSQL cannot be provided: the test is meant to run in CI (`make test`).
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="edgekit[nas] not installed")

from edgekit.nas.config import Budget, NasConfig  # noqa: E402
from edgekit.nas.study import open_study  # noqa: E402
from edgekit.nas.trials import trial_rows  # noqa: E402
from edgekit.nas.space import SpaceConfig  # noqa: E402

from test_nas import synthetic_cost_model  # noqa: E402

N_TRIALS = 6


# ---------------------------------------------------------------------------------------
# A throwaway PostgreSQL server
# ---------------------------------------------------------------------------------------
def _pg_bindir() -> str | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                    if Path(p).parent.name.isdigit() else 0, reverse=True):
        if os.access(f"{d}/initdb", os.X_OK) and os.access(f"{d}/pg_ctl", os.X_OK):
            return d
    return None


def _install_postgres() -> None:
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and shutil.which("sudo") is None:
        pytest.fail("PostgreSQL server binaries are missing and this user cannot install them (not root, no "
                    "sudo): apt-get install postgresql")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (sudo + ["apt-get", "update", "-qq"],
                sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"]):
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if p.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed: {(p.stdout + p.stderr)[-1500:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    bindir = _pg_bindir()
    if bindir is None:
        _install_postgres()
        bindir = _pg_bindir()
        if bindir is None:
            pytest.fail("apt-get install postgresql left no /usr/lib/postgresql/*/bin/initdb")
    as_root = os.geteuid() == 0
    # /tmp directly (not pytest's tmp_path, whose parents are private to root) so the
    # postgres user can reach the cluster directory.
    base = Path(tempfile.mkdtemp(prefix="edgekit-pg-"))
    run_as: list[str] = []
    if as_root:
        shutil.chown(base, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else ["su", "postgres", "-s",
                                                                                        "/bin/sh", "-c"]
    data, sock, log = base / "data", base / "sock", base / "server.log"

    def run(args, **kw):
        if run_as[:1] == ["su"]:
            args = run_as + [" ".join(f"'{a}'" for a in args)]
        else:
            args = run_as + args
        return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)

    r = run(["mkdir", "-p", str(sock)])
    assert r.returncode == 0, r.stderr
    r = run([f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "edgekit", "-N", "-E", "UTF8"])
    assert r.returncode == 0, r.stdout + r.stderr
    port = _free_port()
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    r = run([f"{bindir}/pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", opts, "start"])
    assert r.returncode == 0, r.stdout + r.stderr + (log.read_text() if log.exists() else "")
    try:
        r = run([f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "edgekit", "nas"])
        assert r.returncode == 0, r.stdout + r.stderr
        yield f"postgresql://edgekit@127.0.0.1:{port}/nas"
    finally:
        run([f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Two workers, one study
# ---------------------------------------------------------------------------------------
def _create_study(storage: str, name: str) -> None:
    """What `edgekit nas` stores before it starts workers: the settings and the cost model."""
    space = SpaceConfig(dims=(1,), depth=(1,), channels=(4, 8), kernels=(3, 5), pools=("none", "max"))
    config = NasConfig(board="nucleo-l4r5zi", target="cortex-m4", budget=Budget(65536, 262144, 20.0),
                       dataset="har", train_subset=96, space=space.to_json(), max_epochs=1, patience=1, seed=0,
                       cost_model=synthetic_cost_model().to_json())
    study, _ = open_study(storage, name, config, 0, N_TRIALS)
    study.set_user_attr("n_trials", N_TRIALS)


def _run_two_workers(storage: str, name: str, out: Path) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, "-m", "edgekit", "nas-worker", "--storage", storage, "--study", name,
                               "-o", str(out / f"w{i}"), "--threads", "1", "--worker-index", str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (1, 2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (so, se) in zip(procs, outputs):
        assert p.returncode == 0, so[-2000:] + se[-2000:]
    from edgekit.nas.storage import make_storage

    study = optuna.load_study(study_name=name, storage=make_storage(storage))
    return trial_rows(study)


def _check(rows: list[dict]) -> None:
    finished = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]
    # the workers stop together at the study's trial count (a race may add one trial per extra worker)
    assert N_TRIALS <= len(finished) <= N_TRIALS + 1, [(r["number"], r["state"]) for r in rows]
    assert not [r for r in rows if r["state"] == "RUNNING"]
    workers = {r["worker"] for r in finished}
    assert len(workers) == 2, workers  # both processes ran trials of the one study
    assert len({r["number"] for r in finished}) == len(finished)
    trained = [r for r in finished if r["trained"]]
    assert trained and all(r["val_accuracy"] is not None and r["ram_bytes"] > 0 for r in trained)


@pytest.mark.slow
def test_two_workers_share_a_sqlite_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    _create_study(storage, "shared")
    _check(_run_two_workers(storage, "shared", tmp_path))


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(postgres_url, tmp_path):
    _create_study(postgres_url, "shared-pg")
    rows = _run_two_workers(postgres_url, "shared-pg", tmp_path)
    _check(rows)
    # a third process (another machine, in real use) sees the same study through the server
    from edgekit.nas.storage import make_storage

    names = [s.study_name for s in optuna.get_all_study_summaries(make_storage(postgres_url))]
    assert "shared-pg" in names
