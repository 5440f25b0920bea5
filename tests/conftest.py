import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mlplane.api import Namespace  # noqa: E402
from mlplane.api.meta import ObjectMeta  # noqa: E402
from mlplane.control.store.embedded import EmbeddedStore  # noqa: E402


@pytest.fixture
def store(tmp_path):
    """An embedded store persisted under tmp_path, with the "default" namespace."""
    s = EmbeddedStore(tmp_path / "store.db")
    s.create(Namespace(metadata=ObjectMeta(name="default")))
    yield s
    s.close()
