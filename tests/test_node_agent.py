"""The node agent runs real processes: registration, exit codes, restarts, env, deletion, adoption."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import events, get_pod, wait_for
from mlplane.api import Node, NotFound, Pod
from mlplane.api.meta import find_condition
from mlplane.control.node import logs
from mlplane.control.node.agent import NodeAgent
from mlplane.control.node.resources import memory_kib, node_name_from_hostname

NODE = "node-a"


def dead(pid):
    """True once pid is gone or a zombie (whoever its parent is, it no longer runs)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.fixture
def agents(store, tmp_path):
    """Start agents on one data dir; every process they ran is killed at the end of the test."""
    made = []

    def start(**kwargs):
        kwargs.setdefault("crash_backoff", 0.05)
        agent = NodeAgent(store, tmp_path / "data", NODE, **kwargs)
        made.append(agent)
        return agent.start()

    yield start
    for agent in reversed(made):
        agent.kill_all()


def create_pod(store, name, command, *, restart="Never", env=None, labels=None, annotations=None,
               grace=None, deadline=None, container_restart=None, working_dir=None):
    container = {"name": "main", "image": "python:3.12-slim"}
    if command is not None:
        container["command"] = command
    for key, value in (("env", env), ("restartPolicy", container_restart), ("workingDir", working_dir)):
        if value is not None:
            container[key] = value
    spec = {"nodeName": NODE, "restartPolicy": restart, "containers": [container]}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    meta = {"name": name, "namespace": "default", "labels": labels or {}, "annotations": annotations or {}}
    return store.create(Pod.model_validate({"metadata": meta, "spec": spec}))


def wait_phase(store, name, phase, timeout=5.0):
    return wait_for(lambda: (p := get_pod(store, name)).status.phase == phase and p, timeout=timeout,
                    what=f"{name} {phase}")


def container(pod):
    (status,) = pod.status.container_statuses
    return status


def log_text(tmp_path, pod, restart_count=0):
    return logs.container_log(tmp_path / "data", "default", pod.name, pod.uid, "main", restart_count).read_text()


def pid_of(pod):
    return int(container(pod).container_id.removeprefix("mlplane://"))


# --- the Node ------------------------------------------------------------------------------

def test_registers_the_machine_as_a_ready_node_and_keeps_it_alive(store, agents):
    agents(labels={"pool": "cpu"}, heartbeat=0.2)
    node = store.get(Node, None, NODE)
    assert node.status.capacity == {"cpu": str(len(os.sched_getaffinity(0))), "memory": f"{memory_kib()}Ki",
                                    "pods": "110"}
    assert node.status.allocatable == node.status.capacity
    assert node.metadata.labels["kubernetes.io/hostname"] == NODE
    assert node.metadata.labels["kubernetes.io/os"] == "linux"
    assert node.metadata.labels["kubernetes.io/arch"] in ("amd64", "arm64")
    assert node.metadata.labels["pool"] == "cpu"
    ready = find_condition(node.status.conditions, "Ready")
    assert (ready.status, ready.reason, ready.message) == ("True", "KubeletReady",
                                                           "mlplane node agent is posting ready status")
    assert {a.type: a.address for a in node.status.addresses}["InternalIP"] == "127.0.0.1"
    assert node.status.node_info.operating_system == "linux"
    first = ready.last_heartbeat_time
    wait_for(lambda: find_condition(store.get(Node, None, NODE).status.conditions, "Ready").last_heartbeat_time
             != first, timeout=3, what="a newer heartbeat")
    assert find_condition(store.get(Node, None, NODE).status.conditions, "Ready").last_transition_time == \
        ready.last_transition_time


def test_overrides_replace_the_machine_figures_on_restart(store, agents):
    agents().stop()
    agents(cpu="3", memory="5Gi", max_pods=7, labels={"pool": "big"})
    node = store.get(Node, None, NODE)
    assert node.status.capacity == node.status.allocatable == {"cpu": "3", "memory": "5Gi", "pods": "7"}
    assert node.metadata.labels["pool"] == "big"


@pytest.mark.parametrize("kwargs, flag", [({"cpu": "lots"}, "--cpu"), ({"cpu": "0"}, "--cpu"),
                                          ({"memory": "-1Gi"}, "--memory"), ({"max_pods": 0}, "--max-pods")])
def test_a_bad_override_is_a_clear_error_naming_the_flag(store, tmp_path, kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        NodeAgent(store, tmp_path, NODE, **kwargs)
    assert store.list(Node).items == []


def test_node_name_defaults_to_the_hostname_as_a_dns_subdomain(store, tmp_path):
    assert node_name_from_hostname("My_Host.EXAMPLE.com.") == "my-host.example.com"
    assert node_name_from_hostname("___") == "localhost"
    assert NodeAgent(store, tmp_path).node_name == node_name_from_hostname(socket.gethostname())


# --- running pods --------------------------------------------------------------------------

def test_a_pod_that_exits_zero_succeeds_with_its_exit_code_and_log(store, agents, tmp_path):
    agents()
    create_pod(store, "hello", [sys.executable, "-c", "import sys; print('hello from the pod'); "
                                                      "print('and stderr', file=sys.stderr)"])
    pod = wait_phase(store, "hello", "Succeeded")
    status = container(pod)
    t = status.state.terminated
    assert (t.exit_code, t.reason, t.signal) == (0, "Completed", None)
    assert t.started_at and t.finished_at and status.container_id.startswith("mlplane://")
    assert (status.ready, status.started, status.restart_count) == (False, False, 0)
    assert pod.status.start_time and pod.status.host_ip == "127.0.0.1"  # the node's address
    assert pod.status.pod_ip.startswith("127.") and pod.status.pod_ip != "127.0.0.1"  # the pod's own
    conditions = {c.type: (c.status, c.reason) for c in pod.status.conditions}
    assert conditions == {"PodReadyToStartContainers": ("False", None), "Initialized": ("True", "PodCompleted"),
                          "ContainersReady": ("False", "PodCompleted"), "Ready": ("False", "PodCompleted")}
    assert log_text(tmp_path, pod) == "hello from the pod\nand stderr\n"
    wait_for(lambda: ("Normal", "Created", "Created container: main") in events(store, "hello"), what="the event")
    wait_for(lambda: ("Normal", "Started", "Started container main") in events(store, "hello"), what="the event")


def test_a_running_pod_is_running_and_ready(store, agents):
    agents()
    create_pod(store, "sleeper", ["sleep", "30"])
    pod = wait_phase(store, "sleeper", "Running")
    status = container(pod)
    assert status.state.running.started_at and (status.ready, status.started) == (True, True)
    assert {c.type: c.status for c in pod.status.conditions} == {
        "PodReadyToStartContainers": "True", "Initialized": "True", "ContainersReady": "True", "Ready": "True"}


def test_exit_3_with_restart_never_fails_the_pod(store, agents):
    agents()
    create_pod(store, "three", ["sh", "-c", "exit 3"])
    pod = wait_phase(store, "three", "Failed")
    t = container(pod).state.terminated
    assert (t.exit_code, t.reason) == (3, "Error")
    assert container(pod).restart_count == 0
    assert find_condition(pod.status.conditions, "Ready").reason == "PodFailed"


def test_a_process_killed_by_a_signal_reports_128_plus_n(store, agents):
    agents()
    create_pod(store, "signalled", ["sh", "-c", "kill -TERM $$$$"])  # "$$" is Kubernetes' escape for "$"
    t = container(wait_phase(store, "signalled", "Failed")).state.terminated
    assert (t.exit_code, t.signal, t.reason) == (143, 15, "Error")


def test_on_failure_restarts_in_place_with_a_new_log_per_run(store, agents, tmp_path):
    agents()
    counter = tmp_path / "count"
    script = (f'n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; '
              'echo "attempt $n"; [ $n -ge 3 ]')
    create_pod(store, "flaky", ["sh", "-c", script], restart="OnFailure")
    pod = wait_phase(store, "flaky", "Succeeded")
    status = container(pod)
    assert status.restart_count == 2
    assert (status.state.terminated.exit_code, status.last_state.terminated.exit_code) == (0, 1)
    assert [log_text(tmp_path, pod, n) for n in range(3)] == ["attempt 1\n", "attempt 2\n", "attempt 3\n"]
    assert logs.find_log(tmp_path / "data", "default", "flaky", pod.uid, "main", previous=True).read_text() \
        == "attempt 2\n"
    wait_for(lambda: any(reason == "BackOff" for _, reason, _ in events(store, "flaky")), what="the event")


def test_a_crash_loop_waits_in_back_off_and_says_so(store, agents):
    agents(crash_backoff=30)
    pod = create_pod(store, "crashing", ["sh", "-c", "exit 1"], restart="Always")
    pod = wait_for(lambda: (p := get_pod(store, "crashing")).status.container_statuses
                   and container(p).state.waiting and p, what="CrashLoopBackOff")
    status = container(pod)
    assert pod.status.phase == "Running"
    assert status.state.waiting.reason == "CrashLoopBackOff"
    assert status.state.waiting.message == (f"back-off 30s restarting failed container=main "
                                            f"pod=crashing_default({pod.uid})")
    assert (status.last_state.terminated.exit_code, status.restart_count) == (1, 0)
    assert ("Warning", "BackOff", f"Back-off restarting failed container main in pod "
            f"crashing_default({pod.uid})") in events(store, "crashing")


def test_a_container_restart_policy_overrides_the_pods(store, agents):
    agents()
    create_pod(store, "always", ["true"], restart="Never", container_restart="Always")
    pod = wait_for(lambda: (p := get_pod(store, "always")).status.container_statuses
                   and container(p).restart_count >= 2 and p, what="two restarts")
    assert pod.status.phase == "Running"


def test_a_missing_executable_is_a_start_error(store, agents):
    agents()
    create_pod(store, "missing", ["no-such-binary-xyz", "--flag"])
    t = container(wait_phase(store, "missing", "Failed")).state.terminated
    assert (t.exit_code, t.reason) == (128, "StartError")
    assert t.message == 'exec: "no-such-binary-xyz": executable file not found in $PATH'
    wait_for(lambda: ("Warning", "Failed", f"Error: {t.message}") in events(store, "missing"), what="the event")

    create_pod(store, "retried", ["./not-here"], restart="OnFailure")
    pod = wait_for(lambda: (p := get_pod(store, "retried")).status.container_statuses
                   and container(p).restart_count >= 1 and p, what="a retried start")
    assert container(pod).last_state.terminated.message == 'exec: "./not-here": stat ./not-here: no such file or ' \
                                                           'directory'


def test_a_container_without_command_cannot_run_in_local_mode(store, agents):
    agents()
    create_pod(store, "imageonly", None)
    t = container(wait_phase(store, "imageonly", "Failed")).state.terminated
    assert (t.exit_code, t.reason) == (128, "StartError")
    assert "a command is required in local mode" in t.message


def test_env_holds_field_refs_expansions_and_the_agents_environment(store, agents, tmp_path):
    agents()
    names = ["GREETING", "MESSAGE", "POD_NAME", "POD_NAMESPACE", "POD_UID", "TEAM", "NOTE", "NODE", "POD_IP",
             "HOSTNAME", "PATH"]
    program = (f"import json, os, sys; print(json.dumps(dict({{k: os.environ.get(k) for k in {names!r}}}, "
               "argv=sys.argv[1:], cwd=os.getcwd())))")
    env = [{"name": "GREETING", "value": "hello"},
           {"name": "MESSAGE", "value": "$(GREETING) world, $$(GREETING) escaped, $(LATER) undefined"},
           {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
           {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
           {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
           {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['example.com/note']"}}},
           {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
           {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
           {"name": "LATER", "value": "too late"}]
    pod = create_pod(store, "envpod", [sys.executable, "-c", program, "$(GREETING)", "$(POD_NAME)", "$(NOPE)"],
                     env=env, labels={"team": "ml"}, annotations={"example.com/note": "a note"},
                     working_dir=str(tmp_path))
    wait_phase(store, "envpod", "Succeeded")
    seen = json.loads(log_text(tmp_path, pod))
    assert seen == {"GREETING": "hello", "MESSAGE": "hello world, $(GREETING) escaped, $(LATER) undefined",
                    "POD_NAME": "envpod", "POD_NAMESPACE": "default", "POD_UID": pod.uid, "TEAM": "ml",
                    "NOTE": "a note", "NODE": NODE, "POD_IP": get_pod(store, "envpod").status.pod_ip, "HOSTNAME": "envpod",
                    "PATH": os.environ["PATH"], "argv": ["hello", "envpod", "$(NOPE)"], "cwd": str(tmp_path)}


def test_an_unsupported_field_ref_is_a_config_error(store, agents):
    agents()
    create_pod(store, "badref", ["true"], env=[{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}])
    pod = wait_for(lambda: (p := get_pod(store, "badref")).status.container_statuses and p, what="a status")
    waiting = container(pod).state.waiting
    assert (pod.status.phase, waiting.reason, waiting.message) == ("Pending", "CreateContainerConfigError",
                                                                  "unsupported fieldPath: spec.nope")


def test_deleting_a_running_pod_kills_its_whole_process_group(store, agents, tmp_path):
    agents()
    child_pid = tmp_path / "child.pid"
    # Both the container and its child ignore SIGTERM: only the SIGKILL after the grace period stops them.
    script = f"trap '' TERM; sleep 30 & echo $! > {child_pid}; wait"
    pod = create_pod(store, "doomed", ["sh", "-c", script], grace=1)
    pod = wait_phase(store, "doomed", "Running")
    wait_for(lambda: child_pid.exists() and child_pid.read_text().strip(), what="the child's pid")
    main, child = pid_of(pod), int(child_pid.read_text())
    assert not dead(main) and not dead(child)
    store.delete(Pod, "default", "doomed")
    wait_for(lambda: dead(main) and dead(child), timeout=4, what="the container and its child to die")
    folder = logs.pod_dir(tmp_path / "data", "default", "doomed", pod.uid)
    wait_for(lambda: not folder.exists(), what="the pod's records to be removed")
    wait_for(lambda: ("Normal", "Killing", "Stopping container main") in events(store, "doomed"), what="the event")


def test_active_deadline_kills_the_pod_and_fails_it(store, agents):
    agents()
    create_pod(store, "slow", ["sleep", "30"], deadline=1)
    pod = wait_phase(store, "slow", "Failed", timeout=4)
    assert (pod.status.reason, pod.status.message) == ("DeadlineExceeded",
                                                       "Pod was active on the node longer than the specified deadline")
    t = wait_for(lambda: container(get_pod(store, "slow")).state.terminated, what="the container to end")
    assert (t.exit_code, t.signal) == (143, signal.SIGTERM)


def test_a_restarted_agent_adopts_running_containers_and_reads_exit_codes(store, agents, tmp_path):
    first = agents()
    go = {name: tmp_path / f"go-{name}" for name in ("long", "short")}
    for name, code in (("long", 4), ("short", 7)):
        create_pod(store, name, ["sh", "-c", f"while [ ! -e {go[name]} ]; do sleep 0.02; done; exit {code}"])
    create_pod(store, "lost", ["sleep", "30"])
    pids = {name: pid_of(wait_phase(store, name, "Running")) for name in ("long", "short", "lost")}

    first.stop()
    go["short"].touch()  # finishes while no agent runs
    os.killpg(pids["lost"], signal.SIGKILL)  # vanishes without an exit record
    wait_for(lambda: dead(pids["short"]) and dead(pids["lost"]), what="short and lost to end")
    assert {get_pod(store, n).status.phase for n in pids} == {"Running"}  # nobody reported them

    agents()
    short = container(wait_phase(store, "short", "Failed")).state.terminated
    assert (short.exit_code, short.reason, short.container_id) == (7, "Error", f"mlplane://{pids['short']}")
    lost = container(wait_phase(store, "lost", "Failed")).state.terminated
    assert (lost.exit_code, lost.reason) == (137, "ContainerStatusUnknown")

    long = get_pod(store, "long")
    assert long.status.phase == "Running" and pid_of(long) == pids["long"] and container(long).restart_count == 0
    go["long"].touch()
    long = container(wait_phase(store, "long", "Failed")).state.terminated
    assert (long.exit_code, long.container_id) == (4, f"mlplane://{pids['long']}")


def test_a_restarted_agent_kills_containers_of_pods_deleted_while_it_was_down(store, agents, tmp_path):
    first = agents()
    pod = create_pod(store, "orphan", ["sleep", "30"], grace=1)
    pid = pid_of(wait_phase(store, "orphan", "Running"))
    first.stop()
    store.delete(Pod, "default", "orphan")
    assert not dead(pid)
    agents()
    wait_for(lambda: dead(pid), what="the orphaned container to be killed")
    folder = logs.pod_dir(tmp_path / "data", "default", "orphan", pod.uid)
    wait_for(lambda: not folder.exists(), what="its records to be removed")
    with pytest.raises(NotFound):
        get_pod(store, "orphan")


# --- graceful deletion ---------------------------------------------------------------------

def test_a_deleted_pod_terminates_gracefully_and_is_removed_with_its_final_status(store, agents, tmp_path):
    agents()
    script = "trap 'echo got TERM; exit 0' TERM; echo started; while :; do sleep 0.05; done"
    pod = create_pod(store, "graceful", ["sh", "-c", script], grace=5)
    pid = pid_of(wait_phase(store, "graceful", "Running"))
    wait_for(lambda: log_text(tmp_path, pod) == "started\n", what="the container to start")
    watch = store.watch(Pod, "default", store.list(Pod, "default").resource_version)
    try:
        deleting = store.delete(Pod, "default", "graceful")
        assert deleting.metadata.deletion_timestamp and deleting.metadata.deletion_grace_period_seconds == 5
        seen = []
        while not seen or seen[-1].type != "DELETED":
            event = watch.next(timeout=5)
            assert event is not None, "no DELETED event within 5s"
            seen.append(event)
    finally:
        watch.stop()
    assert dead(pid)
    assert all(e.object.metadata.deletion_timestamp for e in seen)  # Terminating until removed
    final = seen[-1].object  # the last state: what the agent wrote once the container had stopped
    t = container(final).state.terminated
    assert (t.exit_code, t.reason) == (0, "Completed")
    assert final.status.phase == "Succeeded"
    with pytest.raises(NotFound):
        get_pod(store, "graceful")
    wait_for(lambda: ("Normal", "Killing", "Stopping container main") in events(store, "graceful"), what="the event")
    wait_for(lambda: not logs.pod_dir(tmp_path / "data", "default", "graceful", pod.uid).exists(),
             what="the pod's records to be removed")


def test_a_terminating_pod_keeps_its_log_and_the_deletes_grace_period_bounds_the_wait(store, agents, tmp_path):
    agents()
    pod = create_pod(store, "stubborn", ["sh", "-c", "trap 'echo ignoring TERM' TERM; echo up; "
                                                    "while :; do sleep 0.05; done"], grace=30)
    pid = pid_of(wait_phase(store, "stubborn", "Running"))
    wait_for(lambda: log_text(tmp_path, pod) == "up\n", what="the container to start")
    began = time.monotonic()
    assert store.delete(Pod, "default", "stubborn", grace_period_seconds=1).metadata.deletion_grace_period_seconds == 1
    wait_for(lambda: "ignoring TERM" in log_text(tmp_path, pod), what="SIGTERM to reach the container")
    assert get_pod(store, "stubborn").metadata.deletion_timestamp  # Terminating, and its log still there
    wait_for(lambda: dead(pid), timeout=4, what="SIGKILL after the delete's grace period")
    assert 0.9 < time.monotonic() - began < 4
    wait_for(lambda: not store.list(Pod, "default").items, what="the pod to be removed")


def test_a_forced_delete_kills_a_terminating_pod_at_once(store, agents, tmp_path):
    agents()
    pod = create_pod(store, "forced", ["sh", "-c", "trap '' TERM; sleep 30 & wait"], grace=30)
    pid = pid_of(wait_phase(store, "forced", "Running"))
    store.delete(Pod, "default", "forced")
    wait_for(lambda: ("Normal", "Killing", "Stopping container main") in events(store, "forced"),
             what="the graceful stop to begin")
    time.sleep(0.2)
    assert not dead(pid)  # it ignores SIGTERM and has 30s of grace
    store.delete(Pod, "default", "forced", grace_period_seconds=0)
    with pytest.raises(NotFound):
        get_pod(store, "forced")
    wait_for(lambda: dead(pid), timeout=2, what="the container to be killed at once")
    wait_for(lambda: not logs.pod_dir(tmp_path / "data", "default", "forced", pod.uid).exists(),
             what="its records to be removed")


def test_a_pod_deleted_before_its_agent_ran_it_is_removed(store, agents):
    create_pod(store, "never-ran", ["sleep", "30"])
    assert store.delete(Pod, "default", "never-ran").metadata.deletion_timestamp
    agents()
    wait_for(lambda: not store.list(Pod, "default").items, what="the pod to be removed")


# --- starting a process --------------------------------------------------------------------

def test_an_agent_killed_between_spawning_and_recording_a_process_leaves_nothing_running(tmp_path):
    marker = tmp_path / "ran"
    program = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from mlplane.control.node.process import spawn\n"
        "d = Path(sys.argv[1])\n"
        f"a = spawn(['sh', '-c', 'touch {marker}; sleep 30'], dict(os.environ), str(d), d / 'log', d / 'exit')\n"
        "print(a.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)  # dies before it could save the pod's record\n")
    proc = subprocess.run([sys.executable, "-c", program, str(tmp_path)], capture_output=True, text=True, timeout=30,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == -signal.SIGKILL
    shim = int(proc.stdout)
    try:
        wait_for(lambda: dead(shim), what="the unrecorded process to end")
        time.sleep(0.1)
        assert not marker.exists()  # the container's command never ran
    finally:
        try:
            os.killpg(shim, signal.SIGKILL)
        except ProcessLookupError:
            pass
