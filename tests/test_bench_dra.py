"""The DRA scheduling benchmark on a tiny cluster: every shape runs through the real scheduling
framework and its decisions hold up (no timing is asserted)."""

from __future__ import annotations

import pytest

from mlplane.bench import dra


@pytest.mark.parametrize("shape, fit_per_node", [("empty", 5), ("cel", 5), ("match", 2), ("partitionable", 4)])
def test_every_pod_that_fits_is_placed_and_no_device_is_given_twice(shape, fit_per_node):
    r = dra.run_shape(shape, 3)
    assert r["fit"] == 3 * fit_per_node
    assert r["placed"] == r["fit"]
    assert (r["double_allocated"], r["wrong_node"], r["over_counters"]) == (0, 0, 0)
    # The one pod more than fits stays pending and says why.
    assert r["unschedulable"] == 1
    assert r["message"].startswith("0/3 nodes are available: 3 ")


def test_pathological_backtracking_gives_up_within_its_budget():
    r = dra.run_shape("backtracking", 1)
    assert r["placed"] == 0 and r["unschedulable"] == 1
    assert r["message"] == ("0/1 nodes are available: 1 timed out trying to allocate devices: allocation "
                            "search gave up after 200000 steps (max_steps) without finding a solution or "
                            "proving there is none.")


def test_rows_are_a_markdown_table_with_published_figures_labelled():
    results = {shape: dra.run_shape(shape, 1) for shape in ("empty", "cel", "match", "partitionable")}
    results["backtracking"] = {"nodes": 1, "seconds": 1.0, "message": "gave up"}
    lines = dra.rows(results)
    assert all(line.startswith("| ") and line.endswith(" |") and line.count("|") == 5 for line in lines)
    published = [line.split("|") for line in lines if "published, not measured" in line]
    assert [(cells[2].strip(), cells[3].strip()) for cells in published] == [("", "~240"), ("", "~110")]
