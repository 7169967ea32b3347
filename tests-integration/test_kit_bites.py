"""The conformance kit bites: it fails deliberately broken backends, each for the right reason.

Every broken backend below is an ``InMemoryBackend`` with one defect. A generated
test module subclasses ``BackendConformance`` once per backend and is run by a
plain ``python -m pytest`` in a temporary directory (strict asyncio mode, warnings
as errors, no traffik configuration or conftest), so this also proves that the kit
works the way a third-party author runs it. The JUnit report is then checked: each
defect fails the kit test meant to catch it, with that test's message, while a
control test passes on the same backend and a correct backend passes everything
selected.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import subprocess
import sys
import textwrap
import time
import typing
import weakref
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from traffik.backends.base import BackendCapabilities, ThrottleBackend
from traffik.backends.inmemory import InMemoryBackend
from traffik.exceptions import BackendConnectionError
from traffik.strategies import decode_state, encode_state

if typing.TYPE_CHECKING:
    from traffik.decisions import Decision
    from traffik.rates import Rate
    from traffik.strategies import Strategy


# -- broken backends ------------------------------------------------------------------


class NonAtomicIncrement(InMemoryBackend[typing.Any]):
    """Reads, yields to the event loop, then writes: concurrent increments lose updates."""

    async def increment(self, key: str, amount: int = 1) -> int:
        current = await self.get(key)
        await asyncio.sleep(0)
        value = int(current or 0) + amount
        await self.set(key, str(value))
        return value


class RenewingTtl(InMemoryBackend[typing.Any]):
    """Every increment_with_ttl renews the TTL, so a busy key never expires."""

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: int = 60) -> int:
        value = await self.increment(key, amount)
        await self.expire(key, ttl)
        return value


class TtlNeverSet(InMemoryBackend[typing.Any]):
    """increment_with_ttl forgets the TTL."""

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: int = 60) -> int:
        return await self.increment(key, amount)


class GreedyReset(InMemoryBackend[typing.Any]):
    """reset() clears every key, whatever its namespace."""

    async def reset(self) -> None:
        for key in list(self._store()):
            await self.delete(key)


class LazyReset(InMemoryBackend[typing.Any]):
    """reset() clears nothing."""

    async def reset(self) -> None:
        return None


class SloppyPrefix(InMemoryBackend[typing.Any]):
    """reset() matches the namespace without its colon, so "ns2:..." goes with "ns"."""

    async def reset(self) -> None:
        for key in [k for k in self._store() if k.startswith(self.namespace)]:
            await self.delete(key)


class _NoLock:
    def locked(self) -> bool:
        return False

    async def acquire(self, blocking: bool = True, blocking_timeout: float | None = None) -> bool:
        return True

    async def release(self) -> None:
        return None


class NonExclusiveLock(InMemoryBackend[typing.Any]):
    """Every acquire succeeds at once: the lock excludes nobody."""

    async def get_lock(self, name: str) -> _NoLock:  # type: ignore[override]
        return _NoLock()


class _SharedLock:
    """An asyncio lock shared by every handle of one name, with no owner."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock

    def locked(self) -> bool:
        return self._lock.locked()

    async def acquire(self, blocking: bool = True, blocking_timeout: float | None = None) -> bool:
        if not blocking:
            if self._lock.locked():
                return False
            await self._lock.acquire()
            return True
        try:
            await asyncio.wait_for(self._lock.acquire(), blocking_timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def release(self) -> None:
        # The defect: no ownership check, any handle frees the lock.
        if self._lock.locked():
            self._lock.release()


class AnyoneCanRelease(InMemoryBackend[typing.Any]):
    """Locks exclude, but any handle of the same name can release them."""

    async def get_lock(self, name: str) -> _SharedLock:  # type: ignore[override]
        locks: dict[str, asyncio.Lock] = self.__dict__.setdefault("_anyone_locks", {})
        return _SharedLock(locks.setdefault(name, asyncio.Lock()))


class RacyDecide(InMemoryBackend[typing.Any]):
    """decide() reads, yields, then writes, without a lock: concurrent requests all pass."""

    async def decide(
        self, key: str, strategy: Strategy, rate: Rate, cost: int = 1, *, now_ms: int | None = None
    ) -> Decision:
        skey = self.state_key(key, strategy)
        state = decode_state(await self.get(skey))
        await asyncio.sleep(0)
        now = self.now_ms() if now_ms is None else now_ms
        step = strategy.decide(state, now, rate, cost)
        if step.write and step.state is not None:
            await self.set(
                skey, encode_state(step.state), expire=max(1, math.ceil(step.ttl_ms / 1000))
            )
        return step.decision


class ClockIgnoring(InMemoryBackend[typing.Any]):
    """Declares an injectable clock but decides on its own clock."""

    async def decide(
        self, key: str, strategy: Strategy, rate: Rate, cost: int = 1, *, now_ms: int | None = None
    ) -> Decision:
        return await super().decide(key, strategy, rate, cost)


class PeekCharges(InMemoryBackend[typing.Any]):
    """peek() charges a unit, as a decide would."""

    async def peek(
        self, key: str, strategy: Strategy, rate: Rate, *, now_ms: int | None = None
    ) -> Decision:
        return await self.decide(key, strategy, rate, 1, now_ms=now_ms)


class UnwrappedErrors(InMemoryBackend[typing.Any]):
    """Lets client errors (a ValueError here) escape instead of raising BackendError."""

    unwrapped_methods = frozenset({"decide", "increment", "increment_with_ttl"})

    async def increment(self, key: str, amount: int = 1) -> int:
        int(await self.get(key) or 0)  # the client error, unwrapped
        return await super().increment(key, amount)

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: int = 60) -> int:
        int(await self.get(key) or 0)
        return await super().increment_with_ttl(key, amount, ttl)


class SilentClose(InMemoryBackend[typing.Any]):
    """close() does nothing, so use after close silently works."""

    async def close(self) -> None:
        return None


class FalselyShared(InMemoryBackend[typing.Any]):
    """Claims shared state and distributed locks, but each instance keeps its own dict."""

    capabilities = dataclasses.replace(
        InMemoryBackend.capabilities, shared_state=True, distributed_locks=True
    )


#: The "server" of SharedDict: one store and one lock table for every instance.
_SERVER: dict[str, tuple[str, float | None]] = {}
_SERVER_LOCKS: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


class _OwnedLock(_SharedLock):
    """The correct lock: only the handle that acquired it releases it."""

    def __init__(self, lock: asyncio.Lock) -> None:
        super().__init__(lock)
        self._owned = False

    async def acquire(self, blocking: bool = True, blocking_timeout: float | None = None) -> bool:
        if not await super().acquire(blocking, blocking_timeout):
            return False
        self._owned = True
        return True

    async def release(self) -> None:
        if self._owned:
            self._owned = False
            self._lock.release()


class SharedDict(ThrottleBackend[dict[str, typing.Any], typing.Any]):
    """A correct backend whose instances share one process-wide store: the control for
    every cross-instance test. It only implements the primitives (generic decide)."""

    capabilities = BackendCapabilities(
        shared_state=True, distributed_locks=True, injectable_clock=True
    )

    def __init__(self, namespace: str) -> None:
        super().__init__(None, namespace=namespace)

    def _data(self) -> dict[str, tuple[str, float | None]]:
        if self.connection is None:
            raise BackendConnectionError(f"{self!r} is closed; call initialize() first.")
        return typing.cast("dict[str, tuple[str, float | None]]", self.connection)

    def _entry(self, key: str) -> tuple[str, float | None] | None:
        entry = self._data().get(key)
        if entry is not None and entry[1] is not None and entry[1] <= time.monotonic():
            del self._data()[key]
            return None
        return entry

    async def initialize(self) -> None:
        self.connection = _SERVER

    async def close(self) -> None:
        self.connection = None

    async def reset(self) -> None:
        data, prefix = self._data(), self.namespace + ":"
        for key in [k for k in data if k.startswith(prefix)]:
            del data[key]

    async def get(self, key: str) -> str | None:
        entry = self._entry(key)
        return None if entry is None else entry[0]

    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        self._data()[key] = (str(value), None if expire is None else time.monotonic() + expire)

    async def delete(self, key: str) -> bool:
        if self._entry(key) is None:
            return False
        del self._data()[key]
        return True

    async def increment(self, key: str, amount: int = 1) -> int:
        entry = self._entry(key)
        value = amount if entry is None else int(entry[0]) + amount
        self._data()[key] = (str(value), None if entry is None else entry[1])
        return value

    async def get_lock(self, name: str) -> _OwnedLock:
        lock = _SERVER_LOCKS.get(name)
        if lock is None:
            lock = _SERVER_LOCKS[name] = asyncio.Lock()
        return _OwnedLock(lock)


class ClaimsServerClock(SharedDict):
    """Claims a server clock, but decides on each instance's local clock."""

    capabilities = dataclasses.replace(SharedDict.capabilities, server_clock=True)


# -- the generated module -----------------------------------------------------------------

_MODULE = """
import dataclasses
import importlib.util

import pytest

from traffik.backends.base import BackendCapabilities
from traffik.backends.inmemory import InMemoryBackend
from traffik.testing import BackendConformance

_spec = importlib.util.spec_from_file_location("kit_bites_backends", {path!r})
broken = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(broken)


def _kit(name, backend_class, **body):
    def make_backend(self, namespace):
        return backend_class(namespace=namespace)

    return type(name, (BackendConformance,), dict(make_backend=make_backend, **body))


TestCorrect = _kit("TestCorrect", InMemoryBackend)
TestSharedDict = _kit("TestSharedDict", broken.SharedDict)
{broken_classes}
TestWidened = _kit(
    "TestWidened",
    InMemoryBackend,
    capabilities=BackendCapabilities(injectable_clock=True, shared_state=True),
)
TestNarrowed = _kit(
    "TestNarrowed",
    InMemoryBackend,
    capabilities=dataclasses.replace(InMemoryBackend.capabilities, injectable_clock=False),
)


class TestOverridden(BackendConformance):
    def make_backend(self, namespace):
        return InMemoryBackend(namespace=namespace)

    def test_get_missing_key_returns_none(self):
        pass

    test_multi_get_without_keys_returns_an_empty_list = None


class TestXfailWithoutReason(BackendConformance):
    def make_backend(self, namespace):
        return InMemoryBackend(namespace=namespace)

    @pytest.mark.xfail
    def test_get_missing_key_returns_none(self):
        raise AssertionError("known failure")


class TestXfailOverride(BackendConformance):
    def make_backend(self, namespace):
        return InMemoryBackend(namespace=namespace)

    @pytest.mark.xfail(reason="a known failure, kept visible")
    def test_get_missing_key_returns_none(self):
        raise AssertionError("known failure")
"""

_BROKEN: tuple[type[ThrottleBackend[typing.Any, typing.Any]], ...] = (
    NonAtomicIncrement,
    RenewingTtl,
    TtlNeverSet,
    GreedyReset,
    LazyReset,
    SloppyPrefix,
    NonExclusiveLock,
    AnyoneCanRelease,
    RacyDecide,
    ClockIgnoring,
    PeekCharges,
    UnwrappedErrors,
    SilentClose,
    FalselyShared,
    ClaimsServerClock,
)

#: A kit test every broken backend still passes: its failures are specific.
CONTROL = "test_get_missing_key_returns_none"

#: (test class, kit test, expected outcome, text the report must contain)
EXPECTED: list[tuple[str, str, str, str]] = [
    ("NonAtomicIncrement", "test_concurrent_increments_are_exact", "failed", "lost updates"),
    ("RenewingTtl", "test_increment_with_ttl_never_extends_the_ttl", "failed", "never extend"),
    ("TtlNeverSet", "test_increment_with_ttl_counts_and_expires", "failed", "never expired"),
    ("GreedyReset", "test_reset_clears_only_its_namespace", "failed", "which is outside it"),
    ("GreedyReset", "test_clear_clears_only_its_namespace", "failed", "which is outside it"),
    ("LazyReset", "test_reset_clears_only_its_namespace", "failed", "left"),
    ("LazyReset", "test_reset_clears_decision_state", "failed", "did not clear"),
    ("SloppyPrefix", "test_reset_clears_only_its_namespace", "failed", "2:a', which is outside it"),
    ("NonExclusiveLock", "test_lock_excludes_concurrent_tasks", "failed", "held the same lock"),
    (
        "NonExclusiveLock",
        "test_lock_non_blocking_raises_when_held",
        "failed",
        "non-blocking lock was acquired",
    ),
    (
        "AnyoneCanRelease",
        "test_lock_handle_cannot_release_a_lock_it_does_not_hold",
        "failed",
        "never acquired the lock released it",
    ),
    (
        "RacyDecide",
        "test_decide_admits_exactly_the_quota_under_concurrency[fw]",
        "failed",
        "the reference admits 10",
    ),
    (
        "RacyDecide",
        "test_decide_admits_exactly_the_quota_under_concurrency[gcra]",
        "failed",
        "the reference admits 10",
    ),
    ("ClockIgnoring", "test_decide_matches_the_reference[fw]", "failed", "the reference decides"),
    ("PeekCharges", "test_peek_charges_nothing[tb]", "failed", "peek() charged the key"),
    ("PeekCharges", "test_decide_matches_the_reference[tb]", "failed", "the reference"),
    (
        "UnwrappedErrors",
        "test_client_errors_are_wrapped_in_backend_error",
        "failed",
        "ValueError",
    ),
    (
        "SilentClose",
        "test_use_after_close_raises_backend_connection_error",
        "failed",
        "DID NOT RAISE",
    ),
    (
        "Widened",
        "test_capabilities_do_not_widen_the_backend_declaration",
        "failed",
        "claims shared_state",
    ),
    ("Widened", CONTROL, "failed", "claims shared_state"),
    ("Narrowed", "test_decide_matches_the_reference[fw]", "skipped", "'injectable_clock'"),
    ("Narrowed", CONTROL, "passed", ""),
    (
        "Overridden",
        "test_kit_tests_are_not_overridden",
        "failed",
        f"{CONTROL} was overridden without @pytest.mark.xfail",
    ),
    (
        "Overridden",
        "test_kit_tests_are_not_overridden",
        "failed",
        "test_multi_get_without_keys_returns_an_empty_list was removed",
    ),
    (
        "XfailWithoutReason",
        "test_kit_tests_are_not_overridden",
        "failed",
        f"{CONTROL} was overridden without @pytest.mark.xfail(reason=...)",
    ),
    ("XfailOverride", "test_kit_tests_are_not_overridden", "passed", ""),
    ("XfailOverride", CONTROL, "xfailed", "a known failure"),
    ("FalselyShared", "test_state_is_shared_between_instances", "failed", "does not see"),
    (
        "FalselyShared",
        "test_decide_admits_exactly_the_quota_across_instances[fw]",
        "failed",
        "admitted 20, the reference admits 10",
    ),
    ("FalselyShared", "test_lock_excludes_across_instances", "failed", "two backend instances"),
    (
        "FalselyShared",
        "test_concurrent_increments_across_instances_are_exact",
        "failed",
        "two instances lost updates",
    ),
    (
        "ClaimsServerClock",
        "test_server_clock_ignores_the_local_clock",
        "failed",
        "10 days ahead admitted",
    ),
]
EXPECTED += [(cls.__name__, CONTROL, "passed", "") for cls in _BROKEN]
# A correct backend passes every kit test the broken ones fail (SharedDict those that
# need shared state, where InMemoryBackend skips them).
_FAILED = {test for _cls, test, outcome, _ in EXPECTED if outcome == "failed"}
_CROSS = {test for test in _FAILED if "instances" in test or "server_clock" in test}
EXPECTED += sorted(("Correct", test, "passed", "") for test in _FAILED - _CROSS)
EXPECTED += sorted(
    ("SharedDict", test, "passed", "")
    for test in _CROSS - {"test_server_clock_ignores_the_local_clock"}
)
EXPECTED += [
    ("SharedDict", "test_server_clock_ignores_the_local_clock", "skipped", "'server_clock'"),
    ("SharedDict", "test_decide_matches_the_reference[fw]", "passed", ""),
    ("SharedDict", "test_decide_matches_the_reference_across_instances[gcra]", "passed", ""),
]

_INI = """\
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
filterwarnings = error
addopts = --strict-markers --strict-config --import-mode=importlib -p no:cacheprovider
"""

Report = dict[tuple[str, str], tuple[str, str]]


def _outcome(case: ET.Element) -> tuple[str, str]:
    for tag in ("failure", "error"):
        node = case.find(tag)
        if node is not None:
            return (
                "failed" if tag == "failure" else "error"
            ), f"{node.get('message')}\n{node.text}"
    node = case.find("skipped")
    if node is not None:
        kind = "xfailed" if node.get("type") == "pytest.xfail" else "skipped"
        return kind, f"{node.get('message')}\n{node.text}"
    return "passed", ""


@pytest.fixture(scope="module")
def kit_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """Run the kit on every broken backend in one pytest subprocess; outcomes by (class, test)."""
    root = tmp_path_factory.mktemp("kit_bites")
    classes = "\n".join(
        f"Test{c.__name__} = _kit('Test{c.__name__}', broken.{c.__name__})" for c in _BROKEN
    )
    module = _MODULE.format(path=str(Path(__file__).resolve()), broken_classes=classes)
    (root / "test_broken_backends.py").write_text(textwrap.dedent(module), encoding="utf-8")
    (root / "pytest.ini").write_text(_INI, encoding="utf-8")
    node_ids = sorted({f"test_broken_backends.py::Test{c}::{t}" for c, t, _o, _m in EXPECTED})
    junit = root / "report.xml"
    command = [sys.executable, "-m", "pytest", "-c", str(root / "pytest.ini")]
    command += ["--rootdir", str(root), "-q", f"--junitxml={junit}", *node_ids]
    proc = subprocess.run(
        command,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode not in (0, 1) or not junit.exists():
        # 0/1: tests ran (some failed, as they should); anything else is a broken run.
        pytest.fail(
            f"the kit run failed to run (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    report: Report = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        cls = (case.get("classname") or "").rsplit(".", 1)[-1].removeprefix("Test")
        report[(cls, case.get("name") or "")] = _outcome(case)
    return report


@pytest.mark.parametrize(
    ("cls", "test", "outcome", "text"),
    EXPECTED,
    ids=[f"{c}-{t}-{o}" for c, t, o, _ in EXPECTED],
)
def test_kit_verdict(kit_report: Report, cls: str, test: str, outcome: str, text: str) -> None:
    assert (cls, test) in kit_report, f"Test{cls}::{test} did not run"
    got, details = kit_report[(cls, test)]
    assert got == outcome, f"Test{cls}::{test} {got}, expected {outcome}:\n{details}"
    assert text in details, f"Test{cls}::{test} {got} without {text!r} in its report:\n{details}"


def test_every_broken_backend_is_caught() -> None:
    caught = {c for c, _t, o, _m in EXPECTED if o == "failed"}
    assert {c.__name__ for c in _BROKEN} <= caught


def test_broken_backends_declare_what_the_kit_then_checks() -> None:
    # Most defects are behavioural and keep the in-memory declaration; the others
    # claim a capability they do not have.
    claims = {FalselyShared, ClaimsServerClock}
    assert all(c.capabilities == InMemoryBackend.capabilities for c in _BROKEN if c not in claims)
    assert InMemoryBackend.capabilities.injectable_clock
    assert FalselyShared.capabilities.shared_state
    assert ClaimsServerClock.capabilities.server_clock


_PLAIN = """
from traffik.backends.inmemory import InMemoryBackend
from traffik.testing import BackendConformance


class TestInMemoryBackend(BackendConformance):
    def make_backend(self, namespace):
        return InMemoryBackend(namespace=namespace)
"""


def test_the_recipe_runs_under_plain_pytest(tmp_path: Path) -> None:
    # No ini file, no conftest, no options: the three-line recipe as an author writes it.
    (tmp_path / "test_recipe.py").write_text(_PLAIN, encoding="utf-8")
    selection = "missing_key or lock_excludes or matches_the_reference"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "-k", selection],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary, summary
    assert "failed" not in summary, summary
    assert "needs capability 'shared_state'" in proc.stdout  # the skip names its flag
