"""Where container logs live under the data dir (shared by the node agent and the API server).

    {data_dir}/pods/{namespace}_{pod}_{uid}/{container}/{restartCount}.log
"""

from __future__ import annotations

from pathlib import Path


def pod_dir(data_dir: str | Path, namespace: str, name: str, uid: str) -> Path:
    return Path(data_dir) / "pods" / f"{namespace}_{name}_{uid}"


def container_log(data_dir: str | Path, namespace: str, name: str, uid: str, container: str,
                  restart_count: int) -> Path:
    return pod_dir(data_dir, namespace, name, uid) / container / f"{restart_count}.log"


def find_log(data_dir: str | Path, namespace: str, name: str, uid: str, container: str,
             previous: bool = False) -> Path | None:
    """The current (highest restartCount) log of a container, or the one before it with previous."""
    folder = pod_dir(data_dir, namespace, name, uid) / container
    runs = sorted((int(p.stem), p) for p in folder.glob("*.log") if p.stem.isdigit()) if folder.is_dir() else []
    if previous:
        return runs[-2][1] if len(runs) >= 2 else None
    return runs[-1][1] if runs else None
