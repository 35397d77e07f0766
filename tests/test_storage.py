"""nas.store.open_storage on SQLite: BEGIN IMMEDIATE opens every top-level transaction, and a
connection already inside a transaction (an in-memory database's one pooled connection) is not
begun twice."""

import sqlite3

import optuna
import pytest
import sqlalchemy

from nas import store

optuna.logging.set_verbosity(optuna.logging.WARNING)
MEMORY = "sqlite:///:memory:"  # one connection per thread (SingletonThreadPool): every connect() shares it


def test_schema_version_is_read_while_a_session_holds_a_transaction():
    """Optuna's schema check reads alembic's revision through engine.connect() inside an open session."""
    storage = store.open_storage(MEMORY)
    session = storage.scoped_session()
    try:
        assert session.execute(sqlalchemy.text("SELECT count(*) FROM studies")).scalar() == 0  # session begun
        assert storage.get_current_version() == storage.get_head_version()
    finally:
        session.close()
    storage._version_manager.check_table_schema_compatibility()  # session, then get_current_version in it
    study = optuna.create_study(storage=storage)  # the storage still writes
    study.enqueue_trial({}, user_attrs={"i": 0})
    assert [t.user_attrs for t in study.get_trials(states=(optuna.trial.TrialState.WAITING,))] == [{"i": 0}]


def test_connect_inside_an_open_transaction_on_the_same_connection():
    storage = store.open_storage(MEMORY)
    with storage.engine.connect() as outer:
        outer.exec_driver_sql("SELECT count(*) FROM studies")  # autobegun: BEGIN IMMEDIATE
        raw = outer.connection.dbapi_connection
        assert raw.in_transaction
        with storage.engine.connect() as inner:
            assert inner.connection.dbapi_connection is raw  # the pool's one connection
            assert inner.exec_driver_sql("SELECT count(*) FROM trials").scalar() == 0


def test_a_top_level_transaction_takes_the_write_lock_at_its_start(tmp_path):
    """Even a transaction that has only read holds SQLite's write lock: a second writer waits."""
    path = tmp_path / "nas.db"
    storage = store.open_storage(f"sqlite:///{path}")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with storage.engine.connect() as connection:
            connection.exec_driver_sql("SELECT count(*) FROM studies")
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                other.execute("BEGIN IMMEDIATE")
            other.execute("SELECT count(*) FROM studies")  # readers are not blocked
            connection.rollback()
        other.execute("BEGIN IMMEDIATE")  # released with the transaction
        other.execute("ROLLBACK")
    finally:
        other.close()
        storage.engine.dispose()


def test_a_study_s_hours_are_the_union_of_its_trials_and_its_stages_trials(tmp_path):
    """`nas studies`' hours: overlapping trials (parallel workers) count once, the retraining stages'
    trials count, an infeasible proposal and another study's trials do not."""
    from datetime import datetime, timedelta

    url = f"sqlite:///{tmp_path}/nas.db"
    t0 = datetime(2026, 1, 1)

    def add(study, start_min, end_min, **attrs):
        trial = optuna.trial.create_trial(value=1.0, user_attrs=attrs)
        trial.datetime_start = t0 + timedelta(minutes=start_min)
        trial.datetime_complete = t0 + timedelta(minutes=end_min)
        study.add_trial(trial)

    search = optuna.create_study(study_name="s", storage=url, direction="maximize")
    add(search, 0, 30)
    add(search, 10, 40)  # a second worker: 0-40 in all
    add(search, 100, 100.5, infeasible=True)  # rejected before training
    add(optuna.create_study(study_name="s-select", storage=url, direction="maximize"), 60, 90)
    add(optuna.create_study(study_name="s-fresh", storage=url, direction="maximize"), 85, 120)  # 60-120
    add(optuna.create_study(study_name="other", storage=url, direction="maximize"), 0, 600)

    rows = {r.name: r for r in store.study_rows(url)}
    assert sorted(rows) == ["other", "s"]
    assert rows["s"].hours == pytest.approx((40 + 60) / 60)
    assert rows["other"].hours == pytest.approx(10)
