"""Where a study lives: the optuna RDB storage (SQLite by default, any SQLAlchemy URL, e.g.
PostgreSQL, for workers on several machines), and optuna itself, imported on first use."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

from ..errors import EdgekitError


def default_storage(out_dir: str | Path) -> str:
    return f"sqlite:///{(Path(out_dir).resolve() / 'study.db')}"


def load_optuna():
    """optuna, quiet, or one clear error when the nas extra is not installed."""
    try:
        import optuna
    except ImportError:
        raise EdgekitError("architecture search needs optuna: pip install 'edgekit[nas]'") from None
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def make_storage(url: str):
    """An optuna RDB storage with heartbeats: a worker that dies leaves a trial that the
    next worker marks failed and retries once."""
    optuna = load_optuna()
    url = database_url(url)
    if url.startswith("sqlite"):
        kw = {"connect_args": {"timeout": 300}}
    else:
        kw = {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat options are "experimental" in optuna
            return optuna.storages.RDBStorage(
                url, engine_kwargs=kw, heartbeat_interval=20, grace_period=90,
                failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1))
    except ImportError as e:
        raise EdgekitError(f"storage {redact(url)}: missing database driver ({e}); for PostgreSQL: "
                           "pip install psycopg2-binary (in edgekit[nas])") from None
    except Exception as e:  # sqlalchemy OperationalError and friends
        raise EdgekitError(f"cannot open the study storage {redact(url)}: {str(e).splitlines()[0]}") from None


def database_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` with the psycopg2 driver (edgekit[nas] installs it;
    SQLAlchemy 2.1 would otherwise look for psycopg 3), unless a driver is named."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            try:
                import psycopg  # noqa: F401  (psycopg 3 installed: SQLAlchemy's default works)
            except ImportError:
                return "postgresql+psycopg2://" + url[len(prefix):]
            return "postgresql://" + url[len(prefix):]
    return url


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def has_set_constraint() -> bool:
    """optuna >= 5 takes constraints per trial (Trial.set_constraint); before, a sampler's
    constraints_func reads them back."""
    return hasattr(load_optuna().trial.Trial, "set_constraint")
