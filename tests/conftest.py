"""Tiny fixtures built from data the project ships."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpora" / "suggestions.csv"


def valid_id(prefix17: str) -> str:
    """An 18-character ID number with a correct check digit (test data, not a real person)."""
    w = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return prefix17 + "10X98765432"[sum(int(c) * k for c, k in zip(prefix17, w)) % 11]


@pytest.fixture(scope="session")
def corpus() -> pd.DataFrame:
    return pd.read_csv(CORPUS, dtype=str, keep_default_na=False)


@pytest.fixture(scope="session")
def small_corpus(corpus: pd.DataFrame) -> pd.DataFrame:
    """12 messages per domain: enough to train a model in seconds."""
    return corpus.groupby("domain").sample(12, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory: pytest.TempPathFactory, small_corpus: pd.DataFrame) -> Path:
    from triage.cli import main

    d = tmp_path_factory.mktemp("model")
    data = d / "train.csv"
    small_corpus.to_csv(data, index=False)
    rc = main(["train", "--data", str(data), "--text-col", "title", "--text-col", "text", "--label-col", "domain",
               "--scope-col", "scope", "--department-col", "department", "--group-col", "topic",
               "--no-eval", "--out", str(d / "m")])
    assert rc == 0
    return d / "m"


@pytest.fixture(scope="session")
def shipped_model_dir() -> Path:
    return ROOT / "models" / "default"


def _postgres_url() -> str | None:
    """A fresh database on the machine's PostgreSQL, or None (the caller skips, with the reason)."""
    try:
        import psycopg
    except ImportError:
        return None
    base = os.environ.get("TRIAGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        with psycopg.connect(base.replace("postgresql://", "postgresql://", 1), autocommit=True, connect_timeout=3) as c:
            name = f"triage_t{os.getpid()}_{os.urandom(3).hex()}"
            c.execute(f'CREATE DATABASE "{name}"')
    except Exception:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        return None
    return base.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"


def _drop_postgres(url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    base = os.environ.get("TRIAGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    with psycopg.connect(base, autocommit=True, connect_timeout=3) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Each store/API test module runs once on SQLite and once on PostgreSQL (skipped where absent)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'triage.db'}"
        return
    url = _postgres_url()
    if url is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (database test): PostgreSQL tests skipped")
    try:
        yield url
    finally:
        from sqlalchemy import create_engine

        create_engine(url).dispose()
        _drop_postgres(url)


@contextlib.contextmanager
def serving(app):
    """``app`` served by uvicorn on a free local port, in a thread, for clients that speak real HTTP
    (a browser, a third-party library); yields the base URL."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
