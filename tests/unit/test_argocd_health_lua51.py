"""The Argo CD health scripts stay Lua 5.1: Argo CD runs them in gopher-lua, a Lua 5.1.

tests/unit/test_argocd_health.py runs them under lupa's Lua 5.1 runtime (``lupa.lua51``). lupa's default
``LuaRuntime`` is a later Lua (5.4/5.5), where ``goto``, ``//``, bitwise operators, ``<const>``,
``table.unpack`` or ``load(string)`` all work: a script using them would pass there and fail inside Argo CD.
This module pins the runtime and runs the recorded cases of that module (imported, not copied) again under an
explicitly Lua 5.1 runtime that records its version; and it shows that Lua 5.2+ constructs do fail here, while
they work under Lua 5.4, so the pin matters.
"""

from __future__ import annotations

from typing import Any

import lupa.lua51
import lupa.lua54
import pytest

import tests.unit.test_argocd_health as health_tests
from tests.unit.test_argocd_health import EXPECTATIONS, HEALTH_DIR, Expectation, run_health
from tests.unit.test_argocd_health import test_health_of_recorded_object as check_recorded_object


class RecordingLua51Runtime(lupa.lua51.LuaRuntime):  # type: ignore[misc]
    """lupa.lua51.LuaRuntime that remembers the Lua version of every runtime created."""

    versions: list[tuple[int, int]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The arguments went to the extension type's __cinit__ already; object.__init__ takes none.
        RecordingLua51Runtime.versions.append(self.lua_version)


def test_the_health_tests_run_on_lua_5_1() -> None:
    """The runtime of test_argocd_health.py is lupa.lua51's, and the scripts see _VERSION "Lua 5.1"."""
    assert health_tests.LuaRuntime is lupa.lua51.LuaRuntime, (
        "tests/unit/test_argocd_health.py must import LuaRuntime from lupa.lua51 (Argo CD's gopher-lua is Lua 5.1)"
    )
    assert health_tests.LuaError is lupa.lua51.LuaError
    seen = run_health('return { status = "Healthy", message = _VERSION }', {"metadata": {}})
    assert seen.message == "Lua 5.1"


@pytest.mark.parametrize("expectation", EXPECTATIONS, ids=lambda e: e.file.removesuffix(".json"))
def test_recorded_cases_under_lua_5_1(expectation: Expectation, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every recorded object of test_argocd_health.py, run by its own check, on a runtime proven to be 5.1."""
    monkeypatch.setattr(RecordingLua51Runtime, "versions", [])
    monkeypatch.setattr(health_tests, "LuaRuntime", RecordingLua51Runtime)

    check_recorded_object(expectation)

    assert RecordingLua51Runtime.versions, "the check ran no Lua at all"
    assert set(RecordingLua51Runtime.versions) == {(5, 1)}


@pytest.mark.parametrize("path", sorted(HEALTH_DIR.glob("*.lua")), ids=lambda p: p.stem)
def test_scripts_compile_as_lua_5_1(path: Any) -> None:
    """Every script parses as Lua 5.1, including branches the recorded objects may not reach."""
    lua = lupa.lua51.LuaRuntime(register_eval=False, register_builtins=False)
    compiled = lua.globals().loadstring(path.read_text(), "=" + path.name)
    # loadstring returns the chunk, or nil and the message (a tuple in Python).
    assert not isinstance(compiled, tuple), f"{path.name} is not Lua 5.1: {compiled[1]}"
    assert lua.globals().type(compiled) == "function"


#: Lua 5.2+ constructs a 5.4 habit slips in. Each works under Lua 5.4 (checked below) and fails under 5.1.
LATER_LUA = {
    "goto": 'local s = "Healthy" goto done ::done:: return { status = s }',
    "floor division": 'local n = 7 // 2 return { status = "Healthy", message = tostring(n) }',
    "bitwise and": 'local n = 6 & 3 return { status = "Healthy", message = tostring(n) }',
    "const local": 'local s <const> = "Healthy" return { status = s }',
    "table.unpack": 'local s = table.unpack({ "Healthy" }) return { status = s }',
    "load of a string": 'local f = load("return 1") return { status = "Healthy", message = tostring(f()) }',
    "_ENV": 'return { status = "Healthy", message = _ENV.tostring(1) }',
}


@pytest.mark.parametrize("script", LATER_LUA.values(), ids=LATER_LUA.keys())
def test_lua_5_2_and_later_constructs_fail(script: str) -> None:
    with pytest.raises(lupa.lua51.LuaError):
        run_health(script, {"metadata": {}})


@pytest.mark.parametrize("script", LATER_LUA.values(), ids=LATER_LUA.keys())
def test_the_same_constructs_work_under_lua_5_4(script: str) -> None:
    """Control for the test above: they fail because the runtime is 5.1, not because they are broken."""
    lua = lupa.lua54.LuaRuntime(register_eval=False)
    result = lua.execute(script)
    assert dict(result.items())["status"] == "Healthy"
