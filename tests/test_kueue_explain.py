"""Explaining the workload plane: `mlplane describe` and `get` of Kueue objects, and /metrics.

Objects are written into a real store with the statuses the Kueue controller writes (one admitted
workload using 6 CPU and 4 GPUs of ClusterQueue cq-a, one pending workload asking for 8 GPUs), and
the CLI runs in process against a real API server."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from conftest import wait_for
from mlplane.api import Job
from mlplane.api.kueue import ClusterQueue, Configuration, LocalQueue, ResourceFlavor, Workload
from mlplane.api.meta import find_condition
from mlplane.cli.main import main
from mlplane.control.apiserver import ApiServer
from mlplane.control.controllers.kueue import KueueController
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
        # "big" waits, but no Kueue controller runs here to set it aside: it is in the active queue,
        # whatever its QuotaReserved message says.
        'kueue_pending_workloads{cluster_queue="cq-a",status="active"}': "1",
        'kueue_pending_workloads{cluster_queue="cq-a",status="inadmissible"}': "0",
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


def test_a_stopped_or_flavorless_cluster_queue_is_pending_and_a_deleting_one_terminating(cluster, store):
    cq = store.get(ClusterQueue, None, "cq-a")
    cq.spec.stop_policy = "Hold"
    store.update(cq)
    assert 'kueue_cluster_queue_status{cluster_queue="cq-a",status="pending"} 1' in scrape(store)
    cq = store.get(ClusterQueue, None, "cq-a")
    cq.spec.stop_policy = "None"
    cq.metadata.finalizers = ["kueue.x-k8s.io/resource-in-use"]
    store.update(cq)
    store.delete(ClusterQueue, None, "cq-a")
    assert 'kueue_cluster_queue_status{cluster_queue="cq-a",status="terminating"} 1' in scrape(store)


# --- with the Kueue controller running: set-aside heads and fair-sharing weighted shares ----------

def _queued_job(store, name, cpu, queue):
    return store.create(Job.model_validate({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default", "labels": {"kueue.x-k8s.io/queue-name": queue}},
        "spec": {"suspend": True, "parallelism": 1, "completions": 1, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "command": ["true"],
                                                      "resources": {"requests": {"cpu": cpu}}}]}}}}))


def _queues(store, strategy="BestEffortFIFO"):
    store.create(ResourceFlavor.model_validate({"apiVersion": V, "kind": "ResourceFlavor",
                                                "metadata": {"name": "cpu"}}))
    for team in ("a", "b"):
        store.create(ClusterQueue.model_validate({
            "apiVersion": V, "kind": "ClusterQueue", "metadata": {"name": f"cq-{team}"},
            "spec": {"cohortName": "team", "namespaceSelector": {}, "queueingStrategy": strategy,
                     "resourceGroups": [{"coveredResources": ["cpu"], "flavors": [
                         {"name": "cpu", "resources": [{"name": "cpu", "nominalQuota": "2"}]}]}]}}))
        store.create(LocalQueue.model_validate({"apiVersion": V, "kind": "LocalQueue",
                                                "metadata": {"name": f"lq-{team}", "namespace": "default"},
                                                "spec": {"clusterQueue": f"cq-{team}"}}))


def _pending(store, name):
    return wait_for(lambda: next((w for w in store.list(Workload, "default").items
                                  if w.metadata.owner_references[0].name == name
                                  and find_condition(w.status.conditions, "QuotaReserved") is not None
                                  and find_condition(w.status.conditions, "QuotaReserved").status == "False"), None),
                    what=f"{name} pending")


@pytest.mark.parametrize("strategy, active, inadmissible", [("BestEffortFIFO", 0, 1), ("StrictFIFO", 1, 0)])
def test_metrics_count_the_heads_the_controller_set_aside_as_inadmissible(store, strategy, active, inadmissible):
    _queues(store, strategy)
    kueue = KueueController(store).start()
    try:
        _queued_job(store, "huge", "5", "lq-a")  # more than the cohort's 4 CPUs: never fits
        _pending(store, "huge")
        wait_for(lambda: f'kueue_pending_workloads{{cluster_queue="cq-a",status="inadmissible"}} {inadmissible}'
                 in scrape(store), what=f"{inadmissible} inadmissible", timeout=5)
        assert f'kueue_pending_workloads{{cluster_queue="cq-a",status="active"}} {active}' in scrape(store)
    finally:
        kueue.stop()
    # A stopped controller sets nothing aside any more.
    assert 'kueue_pending_workloads{cluster_queue="cq-a",status="inadmissible"} 0' in scrape(store)


def test_fair_sharing_writes_weighted_shares_shown_by_metrics_and_describe(store, capsys):
    _queues(store)
    config = Configuration.model_validate({"apiVersion": "config.kueue.x-k8s.io/v1beta1", "kind": "Configuration",
                                           "fairSharing": {"enable": True}})
    kueue = KueueController(store, config=config).start()
    srv = ApiServer(store, token="secret").start()
    try:
        _queued_job(store, "wide", "3", "lq-a")  # borrows 1 of the cohort's 4 lendable CPUs: 250 per mille
        share = wait_for(lambda: (lambda fs: fs.weighted_share if fs else None)(
            store.get(ClusterQueue, None, "cq-a").status.fair_sharing) or None, what="cq-a weighted share", timeout=5)
        assert share == 250
        assert store.get(ClusterQueue, None, "cq-b").status.fair_sharing.weighted_share == 0
        text = scrape(store)
        assert 'kueue_cluster_queue_weighted_share{cluster_queue="cq-a"} 250' in text
        assert 'kueue_cluster_queue_weighted_share{cluster_queue="cq-b"} 0' in text
        assert re.search(r"^Weighted Share:\s+250$", run(capsys, srv, "describe", "cq", "cq-a"), re.M)

        # The CLI explains with classical admission, and says so when the plane runs fair sharing.
        _queued_job(store, "more", "2", "lq-a")
        wl = _pending(store, "more")
        out = run(capsys, srv, "describe", "workload", wl.name)
        assert re.search(r"^\s+\(computed with classical admission; ClusterQueue cq-a reports a fair-sharing "
                         r"weighted share, so the plane admits with fair sharing and may decide otherwise\)$", out, re.M)
    finally:
        srv.stop()
        kueue.stop()


def test_without_fair_sharing_no_weighted_share_is_written_and_describe_adds_no_note(cluster, store, capsys):
    kueue = KueueController(store).start()
    try:
        wait_for(lambda: store.get(ClusterQueue, None, "cq-a").metadata.finalizers, what="the controller's pass")
        assert store.get(ClusterQueue, None, "cq-a").status.fair_sharing is None
        assert "classical admission" not in run(capsys, cluster, "describe", "workload", "big")
    finally:
        kueue.stop()
