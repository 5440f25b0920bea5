"""Saturation detection and flow control (priority bands, limits, TTL, shedding), as the gateway drives it."""

import pytest

from mlplane.policy.traffic.flow import BandLimits, FlowConfig, FlowController, SaturationDetector
from mlplane.policy.traffic.types import Endpoint, EndpointMetrics, InferenceRequest

NOW = 50.0


def ep(name, waiting=0, kv=0.0, updated_at=NOW):
    return Endpoint(name=name, address=name,
                    metrics=EndpointMetrics(waiting=waiting, kv_usage=kv, updated_at=updated_at))


def req(rid, priority=0, flow="default-flow", size=100):
    return InferenceRequest(id=rid, model="m", prompt="", prompt_tokens=1, priority=priority, fairness_id=flow,
                            size=size)


IDLE = [ep("a"), ep("b")]
BUSY = [ep("a", waiting=10), ep("b", kv=0.9)]


def drain(fc, endpoints, now=NOW):
    out = []
    while (item := fc.pop_ready(endpoints, now)) is not None:
        out.append(item)
    return out


def test_saturation_is_the_average_of_each_endpoints_tightest_resource():
    d = SaturationDetector(queue_threshold=5, kv_threshold=0.8)
    # a: queue 5/5 = 1.0; b: kv 0.4/0.8 = 0.5 -> average 0.75
    assert d.saturation([ep("a", waiting=5), ep("b", kv=0.4)], NOW) == pytest.approx(0.75)
    assert not d.saturated([ep("a", waiting=5), ep("b", kv=0.4)], NOW)
    assert d.saturated([ep("a", waiting=5), ep("b", kv=0.8)], NOW)


def test_stale_metrics_count_as_saturated():
    d = SaturationDetector(staleness=0.2)
    assert d.saturation([ep("a", updated_at=NOW - 1)], NOW) == 1.0
    assert d.saturation([ep("a", updated_at=NOW - 0.1)], NOW) == 0.0
    assert d.saturation([], NOW) == 1.0


def test_requests_sent_since_the_scrape_count_toward_saturation():
    sent = {"a": 5}
    d = SaturationDetector(pending=lambda e: (sent.get(e.name, 0), 0))
    assert d.saturated([ep("a")], NOW)


def test_dispatch_when_idle_queue_when_saturated():
    fc = FlowController()
    assert fc.admit(req("r1"), IDLE, NOW) == "dispatch"
    assert fc.admit(req("r2"), BUSY, NOW) == "queue"
    fc.enqueue("item-2", req("r2"), NOW)
    assert fc.pop_ready(BUSY, NOW) is None  # still saturated: head-of-line wait
    # while others wait, a newcomer of the same priority queues behind them even if the pool has room
    assert fc.admit(req("r3"), IDLE, NOW) == "queue"
    assert fc.pop_ready(IDLE, NOW) == "item-2"
    assert fc.queued() == 0


def test_higher_priority_bands_go_first_and_fcfs_inside_a_band():
    fc = FlowController()
    for rid, prio in [("low-1", -1), ("mid-1", 0), ("high-1", 10), ("mid-2", 0), ("high-2", 10), ("low-2", -1)]:
        fc.enqueue(rid, req(rid, priority=prio), NOW)
    assert fc.band_sizes() == {10: (2, 200), 0: (2, 200), -1: (2, 200)}
    assert drain(fc, IDLE) == ["high-1", "high-2", "mid-1", "mid-2", "low-1", "low-2"]


def test_a_higher_priority_newcomer_is_not_held_behind_lower_bands():
    fc = FlowController()
    fc.enqueue("batch", req("batch", priority=-1), NOW)
    assert fc.admit(req("interactive", priority=5), IDLE, NOW) == "dispatch"


def test_round_robin_fairness_takes_turns_between_flows():
    fc = FlowController(FlowConfig(fairness="round-robin"))
    for i in range(3):
        fc.enqueue(f"a{i}", req(f"a{i}", flow="tenant-a"), NOW)
    fc.enqueue("b0", req("b0", flow="tenant-b"), NOW)
    assert drain(fc, IDLE) == ["a0", "b0", "a1", "a2"]
    strict = FlowController()  # global strict: arrival order across flows
    for i in range(3):
        strict.enqueue(f"a{i}", req(f"a{i}", flow="tenant-a"), NOW)
    strict.enqueue("b0", req("b0", flow="tenant-b"), NOW)
    assert drain(strict, IDLE) == ["a0", "a1", "a2", "b0"]


def test_band_and_global_limits_reject_over_capacity():
    fc = FlowController(FlowConfig(bands={0: BandLimits(max_requests=2, max_bytes=None)}, max_bytes=1000))
    for i in range(2):
        assert fc.admit(req(f"r{i}"), BUSY, NOW) == "queue"
        fc.enqueue(f"r{i}", req(f"r{i}"), NOW)
    assert fc.admit(req("r2"), BUSY, NOW) == "reject"  # band 0 holds 2 requests at most
    assert fc.admit(req("big", priority=1, size=900), BUSY, NOW) == "reject"  # 200 + 900 bytes > 1000 in total
    assert fc.admit(req("small", priority=1, size=800), BUSY, NOW) == "queue"


def test_requests_past_their_ttl_expire_oldest_first():
    fc = FlowController(FlowConfig(default_ttl=10.0))
    fc.enqueue("old", req("old"), NOW)
    fc.enqueue("short", req("short"), NOW + 1, ttl=2.0)
    fc.enqueue("new", req("new"), NOW + 5)
    assert fc.next_deadline() == NOW + 3
    assert fc.expire(NOW + 3) == ["short"]
    assert fc.expire(NOW + 10) == ["old"]
    fresh = [ep("a", updated_at=NOW + 10)]
    assert fc.queued() == 1 and drain(fc, fresh, NOW + 10) == ["new"]


def test_pop_ready_sets_expired_items_aside_for_expire():
    fc = FlowController(FlowConfig(default_ttl=1.0))
    fc.enqueue("late", req("late"), NOW)
    fc.enqueue("fresh", req("fresh"), NOW + 5)
    assert fc.pop_ready([ep("a", updated_at=NOW + 5.5)], NOW + 5.5) == "fresh"
    assert fc.expire(NOW + 5.5) == ["late"]


def test_sheddable_requests_are_rejected_when_saturated():
    fc = FlowController()
    assert fc.admit(req("batch", priority=-1), BUSY, NOW) == "reject"
    assert fc.admit(req("batch", priority=-1), IDLE, NOW) == "dispatch"
    off = FlowController(FlowConfig(enabled=False))
    assert off.admit(req("batch", priority=-1), BUSY, NOW) == "reject"
    assert off.admit(req("chat", priority=0), BUSY, NOW) == "dispatch"  # no flow control: send anyway


def test_fail_closed_when_no_endpoint_ever_reported_metrics():
    never = [ep("a", updated_at=float("-inf")), ep("b", updated_at=float("-inf"))]
    assert FlowController().admit(req("r"), never, NOW) == "queue"  # no metrics = saturated
    try:  # the pool's failureMode decides FailOpen; flow control has no switch of its own
        FlowConfig.from_dict({"failOpen": True})
        raise AssertionError("failOpen should be unknown")
    except ValueError as e:
        assert str(e).startswith("flowControl.failOpen: unknown field")


def test_cancelled_items_leave_the_queue():
    fc = FlowController()
    fc.enqueue("gone", req("gone", size=50), NOW)
    fc.enqueue("stays", req("stays"), NOW)
    assert fc.cancel("gone") and not fc.cancel("gone")
    assert (fc.queued(), fc.queued_bytes()) == (1, 100)
    assert drain(fc, IDLE) == ["stays"]


def test_flow_config_from_an_endpoint_picker_config_section():
    """The flowControl section in llm-d-router's shape (apix/config/v1alpha1 FlowControlConfig)."""
    cfg = FlowConfig.from_dict(
        {"maxBytes": "10Gi", "maxRequests": "1k", "defaultRequestTTL": "1m30s",
         "defaultPriorityBand": {"fairnessPolicyRef": "round-robin-fairness-policy"},
         "defaultNegativePriorityBand": {"maxRequests": 10},
         "priorityBands": [{"priority": 10, "maxRequests": 50, "orderingPolicyRef": "fcfs-ordering-policy"}],
         "saturationDetector": {"pluginRef": "detector"}},
        plugins={"detector": ("utilization-detector", {"queueDepthThreshold": 8,
                                                       "metricsStalenessThreshold": "500ms"})})
    assert (cfg.max_bytes, cfg.max_requests, cfg.default_ttl) == (10 << 30, 1000, 90.0)
    assert cfg.limits(10).max_requests == 50 and cfg.limits(0).max_requests == 5000
    assert cfg.limits(-1).max_requests == 10
    assert cfg.fairness == "round-robin"
    assert (cfg.detector.queue_threshold, cfg.detector.staleness) == (8, 0.5)
    assert FlowConfig.from_dict({"defaultRequestTTL": "0s", "maxRequests": 0}).default_ttl is None
    assert FlowConfig.from_dict({"maxRequests": 0}).max_requests is None  # 0 = unlimited


@pytest.mark.parametrize("doc, message", [
    ({"priorityBands": [{"priority": 1, "maxRequests": -3}]}, r"flowControl.priorityBands\[0\].maxRequests"),
    ({"priorityBands": [{"priority": 1}, {"priority": 1}]}, r"priorityBands\[1\].priority: band 1 is listed twice"),
    ({"maxQueue": 3}, "flowControl.maxQueue: unknown field"),
    ({"maxBytes": "lots"}, "flowControl.maxBytes: 'lots' is not a quantity"),
    ({"defaultRequestTTL": "soon"}, "flowControl.defaultRequestTTL: 'soon' is not a duration"),
    ({"defaultPriorityBand": {"fairnessPolicyRef": "vtc"}}, "fairnessPolicyRef: 'vtc' is not one of"),
    ({"saturationDetector": {"pluginRef": "nope"}}, "saturationDetector.pluginRef: no plugin named 'nope'"),
])
def test_flow_config_errors_name_the_field(doc, message):
    with pytest.raises(ValueError, match=message):
        FlowConfig.from_dict(doc)


def test_a_request_may_carry_its_own_ttl():
    fc = FlowController(FlowConfig(default_ttl=60.0))
    r = req("hurry")
    r.state["ttl"] = 1.5  # the gateway's reading of x-llm-d-inference-ttl
    fc.enqueue("hurry", r, NOW)
    assert fc.expire(NOW + 2) == ["hurry"]
