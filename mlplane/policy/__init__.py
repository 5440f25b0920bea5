"""The policy core, one package per plane: pure decision code over in-memory snapshots.

Nothing here does I/O, reads a clock, starts a thread or imports from ``mlplane.control`` or
``mlplane.cli``: callers pass in everything a decision needs (including the time, where one
matters), so the control plane, the simulator and the CLI's debugging verbs decide the same way.
"""
