"""optuna-dashboard on a storage, with the artifacts (stored weights, report files) beside it."""

from __future__ import annotations

from nas import NasError, store


class DashboardError(NasError, OSError):
    """An address to serve on that cannot be had."""


def page(url: str, study: str | None, host: str, port: int) -> str:
    """The dashboard's address, at `study`'s page when one is named (which must exist)."""
    storage = store.open_existing(url)
    address = f"http://{host}:{port}/dashboard"
    if study is None:
        return address
    store.load_study(url, study)  # a clear error for an unknown study
    return f"{address}/studies/{storage.get_study_id_from_name(study)}"


def serve(url: str, results_dir: str, host: str, port: int) -> None:
    """Serve until Ctrl-C."""
    import optuna_dashboard  # its web server: only when serving

    artifacts = store.artifact_store(store.artifacts_folder(results_dir))
    try:
        optuna_dashboard.run_server(store.open_existing(url), host=host, port=port, artifact_store=artifacts)
    except OSError as e:
        raise DashboardError(f"cannot serve on {host}:{port}: {e.strerror}; try another --port") from None
