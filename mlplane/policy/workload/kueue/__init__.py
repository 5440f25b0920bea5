"""Kueue-compatible admission: quotas, cohorts, flavor assignment, scheduling cycles, preemption.

Modules, bottom up: ``quota`` (the resource tree of ClusterQueues and Cohorts), ``units``
(quantity strings), ``model`` (plain data), ``state`` (the snapshot), ``flavors`` (flavor
assignment), ``preemption`` (classical preemption), ``cycle`` (scheduling cycles) and
``snapshot`` (from API objects). The entry point for ``mlplane queue schedule`` is
``snapshot.schedule(objects, now, cycles) -> cycle.Result``; ``Result.to_dict()`` is its JSON.
"""
