"""Pure decisions: snapshot model, placement, VMID allocation, ownership, reconcile, balancing.

Nothing here does I/O or reads a clock: the cluster snapshot, the spec and ``now`` are arguments, and
the result is data (actions with reasons). No kopf, proxmoxer or kubernetes imports (import-linter
enforces it), so every decision is tested without a cluster, a network or a clock.
"""
