"""The control plane: object store, API server, controller runtime, controllers and the node agent.

Everything here may do I/O; decisions are delegated to ``mlplane.policy``.
"""
