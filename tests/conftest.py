"""Shared pytest configuration.

Fixture plugins live in tests/fixtures/: `kube` (the local control plane: etcd + kube-apiserver
built from upstream Go modules, or an existing cluster with --kubeconfig) and `sim` (pve_sim
servers started in-process over HTTPS).
"""

pytest_plugins = [
    "tests.fixtures.kube",
    "tests.fixtures.sim",
    "tests.fixtures.crds",
    "tests.fixtures.operator",
]
