"""The embedded control plane: one process holding the store, the API server, the controllers and
the local node agent, all on one data dir.

    data_dir/
      store.db       SQLite: every object (WAL, group commit)
      pods/...       container logs and the node agent's process records
      lock           held while a control plane runs on this data dir
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import mlplane.policy.device  # noqa: F401  (CEL selectors are compiled when objects are stored)
from mlplane.api.core import Namespace
from mlplane.api.errors import AlreadyExists
from mlplane.api.kueue import Configuration
from mlplane.api.meta import ObjectMeta
from mlplane.control.apiserver import ApiServer
from mlplane.control.controllers.devicetaint import DeviceTaintEvictionController
from mlplane.control.controllers.job import JobController
from mlplane.control.controllers.kueue import KueueController
from mlplane.control.controllers.resourceclaim import ResourceClaimController
from mlplane.control.controllers.scheduler import Scheduler
from mlplane.control.node.agent import NodeAgent
from mlplane.control.store.embedded import EmbeddedStore

log = logging.getLogger(__name__)

class DataDirInUse(RuntimeError):
    pass


@dataclass
class PlaneConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port
    token: str | None = None
    run_node: bool = True
    node_name: str | None = None
    cpu: str | None = None
    memory: str | None = None
    node_labels: dict[str, str] = field(default_factory=dict)
    job_backoff: float = 10.0  # upstream's pod-failure backoff base
    crash_backoff: float = 10.0  # upstream's CrashLoopBackOff base
    kueue_config: Configuration | None = None  # Kueue's config file (fairSharing, waitForPodsReady)
    node_config: Path | None = None  # the node's devices (mlplane.control.node.devices); None: NVML GPUs


class ControlPlane:
    def __init__(self, config: PlaneConfig):
        self.config = config
        self.data_dir = Path(config.data_dir).resolve()
        self._lock_file = None
        self.store: EmbeddedStore | None = None
        self.apiserver: ApiServer | None = None
        self.agent: NodeAgent | None = None
        self._parts: list = []

    @property
    def url(self) -> str:
        assert self.apiserver is not None
        return self.apiserver.url

    def _lock(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        f = open(self.data_dir / "lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise DataDirInUse(f"data dir {self.data_dir} is in use by another mlplane control plane "
                               f"(pid {holder}); stop it or pass another --data-dir") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lock_file = f

    def start(self) -> "ControlPlane":
        # Short GIL hand-offs keep watch latency low while many request threads are busy.
        sys.setswitchinterval(0.0005)
        self._lock()
        cfg = self.config
        try:
            # The server comes up first: a bad address or a busy port fails before anything else starts.
            self.store = EmbeddedStore(self.data_dir / "store.db")
            self.apiserver = ApiServer(self.store, cfg.host, cfg.port, token=cfg.token, data_dir=self.data_dir)
            for name in ("default", "kube-system"):
                try:
                    self.store.create(Namespace(metadata=ObjectMeta(name=name)))
                except AlreadyExists:
                    pass
            self.apiserver.start()
            self._parts = [Scheduler(self.store), JobController(self.store, backoff_base=cfg.job_backoff),
                           KueueController(self.store, config=cfg.kueue_config), ResourceClaimController(self.store),
                           DeviceTaintEvictionController(self.store)]
            if cfg.run_node:
                self.agent = NodeAgent(self.store, self.data_dir, cfg.node_name, cpu=cfg.cpu, memory=cfg.memory,
                                       labels=cfg.node_labels, crash_backoff=cfg.crash_backoff,
                                       node_config=cfg.node_config)
                self._parts.append(self.agent)
            for part in self._parts:
                part.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything. Containers keep running; the next start on this data dir adopts them."""
        for part in reversed(self._parts):
            try:
                part.stop()
            except Exception:
                log.exception("stopping %s", type(part).__name__)
        self._parts = []
        if self.apiserver is not None:
            self.apiserver.stop()
            self.apiserver = None
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
