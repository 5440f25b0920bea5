"""The CLI's own logic, run in process against a real API server (no node agent needed)."""

import json

import pytest

from mlplane.api import Pod
from mlplane.cli.main import LAST_APPLIED, main, parse_duration, three_way_patch, UsageError
from mlplane.cli.printers import human_duration
from mlplane.control.apiserver import ApiServer

POD = """
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web, tier: a}}
spec:
  containers: [{name: main, image: python:3.12, command: [sleep, "60"]}]
"""


@pytest.fixture
def server(store):
    srv = ApiServer(store).start()
    yield srv.url
    srv.stop()


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_apply_is_a_three_way_merge_that_keeps_what_others_own(server, store, capsys, tmp_path, monkeypatch):
    f = tmp_path / "pod.yaml"
    f.write_text(POD)
    assert run(capsys, "apply", "-f", str(f), "-s", server)[1] == "pod/web created\n"
    store.bind("default", "web", "node-1")  # the scheduler's field: apply must leave it alone
    assert run(capsys, "apply", "-f", str(f), "-s", server)[1] == "pod/web unchanged\n"

    f.write_text(POD.replace("tier: a", "owner: me"))  # drop one label, add another
    assert run(capsys, "apply", "-f", str(f), "-s", server)[1] == "pod/web configured\n"
    pod = store.get(Pod, "default", "web")
    assert pod.spec.node_name == "node-1"
    assert pod.labels == {"app": "web", "owner": "me"}
    assert json.loads(pod.metadata.annotations[LAST_APPLIED])["metadata"]["labels"] == {"app": "web", "owner": "me"}

    f.write_text(POD.replace("sleep", "echo"))  # pod spec is immutable: the server says so, and why
    code, out, err = run(capsys, "apply", "-f", str(f), "-s", server)
    assert code == 1 and "Error from server (Invalid): error when applying pod/web" in err and "Forbidden" in err


def test_three_way_patch():
    last = {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": 1, "y": [1, 2]}}
    new = {"metadata": {"labels": {"a": "1"}}, "spec": {"x": 2, "y": [1, 2]}}
    assert three_way_patch(last, new) == {"metadata": {"labels": {"a": "1", "b": None}},
                                          "spec": {"x": 2, "y": [1, 2]}}


def test_get_tables_and_errors(server, store, capsys, tmp_path):
    f = tmp_path / "pod.yaml"
    f.write_text(POD)
    run(capsys, "apply", "-f", str(f), "-s", server)
    code, out, _ = run(capsys, "get", "pods", "-s", server)
    assert code == 0 and out.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert out.splitlines()[1].split()[:3] == ["web", "0/1", "Pending"]
    code, out, _ = run(capsys, "get", "pod/web", "-o", "json", "-s", server)
    assert json.loads(out)["metadata"]["name"] == "web"
    code, _, err = run(capsys, "get", "pods", "-l", "a in (", "-s", server)
    assert code == 1 and "unable to parse label selector" in err
    code, _, err = run(capsys, "describe", "pods", "-l", "app=none", "-s", server)
    assert code == 1 and "No resources found" in err
    code, _, err = run(capsys, "wait", "--for=condition=Ready", "pod/web", "--timeout=0.3s", "-s", server)
    assert code == 1 and err.strip() == "error: timed out waiting for the condition on pods/web"
    code, _, err = run(capsys, "wait", "--for=bogus", "pod/web", "-s", server)
    assert code == 1 and "unrecognized condition" in err


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("1h30m") == 5400 and parse_duration("2.5") == 2.5
    with pytest.raises(UsageError, match="invalid duration"):
        parse_duration("soon")
    # kubectl's HumanDuration
    assert [human_duration(s) for s in (5, 119, 125, 600, 3 * 3600 + 60, 30 * 3600, 3 * 86400)] == \
        ["5s", "119s", "2m5s", "10m", "3h1m", "30h", "3d"]
