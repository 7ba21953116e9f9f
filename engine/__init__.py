"""Relayflow's domain: definitions, scheduling, node types, run lifecycle and storage.

Nothing here imports `api` or `workers`; they import us.
"""
