"""The Proxmox VE adapter: the only package that imports proxmoxer.

It turns PVE answers into typed values (``planning.model`` snapshots, task results) and typed errors
(:mod:`pve_operator.pve.errors`), waits on tasks by UPID with a deadline, never retries a mutating
request blindly, and never lets a credential reach a log line, an event or an exception message.
"""
