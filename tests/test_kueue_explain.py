"""Explaining the workload plane: `mlplane describe` and `get` of Kueue objects, and /metrics.

Objects are written into a real store with the statuses the Kueue controller writes (one admitted
workload using 6 CPU and 4 GPUs of ClusterQueue cq-a, one pending workload asking for 8 GPUs), and
the CLI runs in process against a real API server."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from mlplane.api.kueue import ClusterQueue, LocalQueue, ResourceFlavor, Workload
from mlplane.cli.main import main
from mlplane.control.apiserver import ApiServer
from mlplane.control.metrics import scrape

V = "kueue.x-k8s.io/v1beta2"
PENDING_MESSAGE = ("couldn't assign flavors to pod set main: insufficient quota for nvidia.com/gpu in flavor a100, "
                   "previously considered podsets requests (0) + current podset request (8) > maximum capacity (4)")


def _workload(store, name, count, cpu, gpu, status):
    wl = store.create(Workload.model_validate({
        "apiVersion": V, "kind": "Workload", "metadata": {"name": name, "namespace": "default"},
        "spec": {"queueName": "lq-a", "priority": 10, "podSets": [{"name": "main", "count": count, "template": {
            "spec": {"containers": [{"name": "c", "image": "x", "resources": {
                "requests": {"cpu": cpu, "nvidia.com/gpu": gpu}}}]}}}]}}))
    wl.status = type(wl.status).model_validate(status)
    return store.update_status(wl)


def _cond(type_, status, reason, message):
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2024-01-01T00:00:00Z"}


@pytest.fixture
def cluster(store):
    store.create(ResourceFlavor.model_validate({"apiVersion": V, "kind": "ResourceFlavor",
                                                "metadata": {"name": "a100"}}))
    cq = store.create(ClusterQueue.model_validate({
        "apiVersion": V, "kind": "ClusterQueue", "metadata": {"name": "cq-a"},
        "spec": {"cohortName": "team", "namespaceSelector": {}, "resourceGroups": [{
            "coveredResources": ["cpu", "nvidia.com/gpu"], "flavors": [{"name": "a100", "resources": [
                {"name": "cpu", "nominalQuota": "9"},
                {"name": "nvidia.com/gpu", "nominalQuota": "4", "borrowingLimit": "0"}]}]}]}}))
    usage = [{"name": "a100", "resources": [{"name": "cpu", "total": "6", "borrowed": "0"},
                                             {"name": "nvidia.com/gpu", "total": "4", "borrowed": "0"}]}]
    cq.status = type(cq.status).model_validate({"pendingWorkloads": 1, "reservingWorkloads": 1,
                                                "admittedWorkloads": 1, "flavorsReservation": usage,
                                                "flavorsUsage": usage})
    store.update_status(cq)
    lq = store.create(LocalQueue.model_validate({"apiVersion": V, "kind": "LocalQueue",
                                                 "metadata": {"name": "lq-a", "namespace": "default"},
                                                 "spec": {"clusterQueue": "cq-a"}}))
    lq_usage = [{"name": "a100", "resources": [{"name": "cpu", "total": "6"}, {"name": "nvidia.com/gpu", "total": "4"}]}]
    lq.status = type(lq.status).model_validate({"pendingWorkloads": 1, "reservingWorkloads": 1, "admittedWorkloads": 1,
                                                "flavorsReservation": lq_usage, "flavorsUsage": lq_usage})
    store.update_status(lq)
    _workload(store, "train", 4, "1500m", "1", {
        "admission": {"clusterQueue": "cq-a", "podSetAssignments": [{
            "name": "main", "count": 4, "flavors": {"cpu": "a100", "nvidia.com/gpu": "a100"},
            "resourceUsage": {"cpu": "6", "nvidia.com/gpu": "4"}}]},
        "conditions": [_cond("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue cq-a"),
                       _cond("Admitted", "True", "Admitted", "The workload is admitted")]})
    _workload(store, "big", 4, "500m", "2", {
        "conditions": [_cond("QuotaReserved", "False", "Pending", PENDING_MESSAGE)],
        "requeueState": {"count": 1}})
    srv = ApiServer(store, token="secret").start()
    yield srv
    srv.stop()


def run(capsys, server, *argv):
    code = main([*argv, "-s", server.url, "--token", "secret"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_describe_pending_workload_says_why_in_numbers(cluster, capsys):
    out = run(capsys, cluster, "describe", "workload", "big")
    assert re.search(r"^Queue:\s+lq-a$", out, re.M)
    assert re.search(r"^Priority:\s+10$", out, re.M)
    assert re.search(r"^    Requests per pod:\s+cpu: 500m$", out, re.M)
    assert re.search(r"^    Requests in all:\s+cpu: 2\n\s+nvidia.com/gpu: 8$", out, re.M)
    assert re.search(r"^Admission:\n  <none>$", out, re.M)
    assert re.search(r"^Requeue State:\s+count 1$", out, re.M)
    assert re.search(r"^  Reason:\s+QuotaReserved=False: Pending$", out, re.M)
    assert f"  Message:            {PENDING_MESSAGE}" in out
    # The numbers, recomputed now: 4 of 4 GPUs are reserved by "train", no borrowing allowed.
    assert re.search(r"^  Quota now:\s+insufficient quota for nvidia.com/gpu in flavor a100: requested 8, "
                     r"available 0 \(nominal 4, borrowing limit 0\)$", out, re.M)
    assert "insufficient quota for cpu" not in out  # 2 of the 3 free CPUs are enough


def test_describe_admitted_workload_and_queues(cluster, capsys):
    out = run(capsys, cluster, "describe", "wl", "train")
    assert re.search(r"^Admission:\n  Cluster Queue:\s+cq-a\n  main:\n    Count:\s+4\n"
                     r"    Flavors:\s+cpu: a100\n\s+nvidia.com/gpu: a100\n"
                     r"    Resource Usage:\s+cpu: 6\n\s+nvidia.com/gpu: 4$", out, re.M)
    assert "Waiting:" not in out and "Quota now" not in out
    assert re.search(r"^  QuotaReserved\s+True\s+QuotaReserved\s+Quota reserved in ClusterQueue cq-a$", out, re.M)

    out = run(capsys, cluster, "describe", "cq", "cq-a")
    assert re.search(r"^Cohort:\s+team$", out, re.M) and re.search(r"^Queueing Strategy:\s+BestEffortFIFO$", out, re.M)
    rows = [line.split() for line in out.splitlines() if line.startswith("  a100")]
    assert rows == [["a100", "cpu", "9", "<unset>", "<unset>", "6", "0", "6"],
                    ["a100", "nvidia.com/gpu", "4", "0", "<unset>", "4", "0", "4"]]
    assert re.search(r"^Pending Workloads:\s+1$", out, re.M) and re.search(r"^Admitted Workloads:\s+1$", out, re.M)

    out = run(capsys, cluster, "describe", "lq", "lq-a")
    assert re.search(r"^Cluster Queue:\s+cq-a$", out, re.M)
    assert [line.split() for line in out.splitlines() if line.startswith("  a100")] == \
        [["a100", "cpu", "6", "6"], ["a100", "nvidia.com/gpu", "4", "4"]]
    assert re.search(r"^Reserving Workloads: 1$", out, re.M)


def test_get_tables(cluster, capsys):
    lines = run(capsys, cluster, "get", "workloads", "-o", "wide").splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["NAME", "QUEUE", "RESERVED IN", "ADMITTED", "FINISHED", "AGE",
                                             "PRIORITY", "REASON", "MESSAGE"]
    big = next(line for line in lines if line.startswith("big "))
    assert re.split(r"\s{2,}", big)[-3:] == ["10", "Pending", PENDING_MESSAGE]
    train = next(line for line in lines if line.startswith("train "))
    assert re.split(r"\s{2,}", train)[1:4] == ["lq-a", "cq-a", "True"]
    assert "REASON" not in run(capsys, cluster, "get", "workloads")

    lines = run(capsys, cluster, "get", "clusterqueues").splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["NAME", "COHORT", "PENDING WORKLOADS", "ADMITTED WORKLOADS", "USAGE",
                                             "BORROWED"]
    assert re.split(r"\s{2,}", lines[1]) == ["cq-a", "team", "1", "1", "a100: cpu 6/9, nvidia.com/gpu 4/4",
                                             "<none>"]


_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*"(,|(?=\})))*\})? '
                     r'(-?[0-9.eE+-]+|[+-]Inf|NaN)$')


def _scrape(url, token=None):
    request = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


def test_metrics(cluster):
    content_type, text = _scrape(cluster.url)  # no token needed from loopback
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for line in text.splitlines():
        if line.startswith("# "):
            assert re.match(r"^# (HELP|TYPE) kueue_[a-z_]+ \S", line), line
            continue
        assert _SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        samples[name] = value
    for family in ("kueue_pending_workloads", "kueue_cluster_queue_resource_usage"):
        assert f"# TYPE {family} gauge" in text
    labels = 'cohort="team",cluster_queue="cq-a",flavor="a100",resource="nvidia.com/gpu"'
    assert samples == samples | {
        # "big" failed an admission attempt in a BestEffortFIFO queue: set aside until quota frees.
        'kueue_pending_workloads{cluster_queue="cq-a",status="active"}': "0",
        'kueue_pending_workloads{cluster_queue="cq-a",status="inadmissible"}': "1",
        'kueue_admitted_active_workloads{cluster_queue="cq-a"}': "1",
        'kueue_reserving_active_workloads{cluster_queue="cq-a"}': "1",
        'kueue_cluster_queue_status{cluster_queue="cq-a",status="active"}': "1",
        'kueue_cluster_queue_status{cluster_queue="cq-a",status="pending"}': "0",
        f"kueue_cluster_queue_resource_usage{{{labels}}}": "4",
        f"kueue_cluster_queue_resource_reservation{{{labels}}}": "4",
        f"kueue_cluster_queue_nominal_quota{{{labels}}}": "4",
        f"kueue_cluster_queue_borrowing_limit{{{labels}}}": "0",
        f"kueue_cluster_queue_lending_limit{{{labels}}}": "+Inf",
        'kueue_cluster_queue_borrowing_limit{cohort="team",cluster_queue="cq-a",flavor="a100",resource="cpu"}': "+Inf",
    }
    # The rest of the API still wants the token; /metrics takes it too.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(cluster.url + "/apis/kueue.x-k8s.io/v1beta2/clusterqueues", timeout=5)
    assert e.value.code == 401
    assert _scrape(cluster.url, "secret")[1].count("\n") == text.count("\n")


def test_metrics_split_pending_into_active_and_inadmissible(cluster, store):
    big = store.get(Workload, "default", "big")
    big.status.conditions[0].message = "waiting in ClusterQueue cq-a: 1 workload(s) ahead in the queue"
    big.status.requeue_state.requeue_at = "2024-01-01T00:10:00Z"
    store.update_status(big)
    before, after = 1704067200.0 + 60, 1704067200.0 + 601  # requeueAt is 600 s after 2024-01-01T00:00:00Z
    assert 'kueue_pending_workloads{cluster_queue="cq-a",status="inadmissible"} 1' in scrape(store, before)
    assert 'kueue_pending_workloads{cluster_queue="cq-a",status="active"} 1' in scrape(store, after)
