"""Applies planned actions through ``pve/`` under limits (concurrency, deadlines), with dry-run.

It re-proves ownership from the CT's own config before anything destructive, waits on every task
by UPID, and reports an :class:`~pve_operator.execution.executor.Outcome` per action for status and
events. It makes no decisions beyond "is this still safe to do".
"""
