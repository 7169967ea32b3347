"""traffik-core runs its own conformance kit on InMemoryBackend, and on the documented DictBackend.

``DictBackend`` is the custom backend of ``docs/writing-a-backend.md``: it
implements only the abstract primitives, so running the kit on it proves that the
base class's generic ``decide`` (lock, read, transition, write) is correct, and that
the documentation shows a backend that passes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

from traffik.backends.base import ThrottleBackend
from traffik.backends.inmemory import InMemoryBackend
from traffik.testing import BackendConformance, kit_test_names

_DOC = Path(__file__).resolve().parents[3] / "docs" / "writing-a-backend.md"


def _documented_backend() -> type[ThrottleBackend[typing.Any, typing.Any]]:
    text = _DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"^```python[^\n]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    source = next((b for b in blocks if "class DictBackend(" in b), None)
    if source is None:
        raise LookupError(f"{_DOC} has no python block defining DictBackend.")
    module = types.ModuleType("traffik_docs_dict_backend")
    exec(compile(source, str(_DOC), "exec"), module.__dict__)
    return typing.cast("type[ThrottleBackend[typing.Any, typing.Any]]", module.DictBackend)


DictBackend = _documented_backend()


class TestInMemoryConformance(BackendConformance):
    def make_backend(self, namespace: str) -> InMemoryBackend[typing.Any]:
        return InMemoryBackend(namespace=namespace)


class TestDocumentedDictBackendConformance(BackendConformance):
    def make_backend(self, namespace: str) -> ThrottleBackend[typing.Any, typing.Any]:
        return DictBackend(namespace=namespace)


#: The kit's test names are public API: add to this list, never rename or remove
#: (outside a major release), since subclasses refer to them.
PUBLIC_TEST_NAMES = [
    "test_adjust_matches_the_reference",
    "test_adjust_matches_the_reference_across_instances",
    "test_adjust_refunds_exactly_across_instances",
    "test_adjust_refunds_exactly_under_concurrency",
    "test_adjust_rejects_a_delta_that_is_not_an_int",
    "test_awkward_keys_round_trip",
    "test_capabilities_do_not_widen_the_backend_declaration",
    "test_clear_clears_only_its_namespace",
    "test_client_errors_are_wrapped_in_backend_error",
    "test_close_is_idempotent",
    "test_concurrent_increment_with_ttl_is_exact",
    "test_concurrent_increments_across_instances_are_exact",
    "test_concurrent_increments_are_exact",
    "test_custom_strategies_cannot_be_adjusted",
    "test_decide_admits_exactly_the_quota_across_instances",
    "test_decide_admits_exactly_the_quota_under_concurrency",
    "test_decide_matches_the_reference",
    "test_decide_matches_the_reference_across_instances",
    "test_decide_rejects_a_cost_above_capacity_forever",
    "test_decrement_below_zero_goes_negative",
    "test_decrement_subtracts",
    "test_delete_returns_whether_the_key_existed",
    "test_expire_missing_key_returns_false",
    "test_expire_sets_a_ttl_on_an_existing_key",
    "test_extra_charge_is_never_refused_and_puts_the_key_in_debt",
    "test_get_missing_key_returns_none",
    "test_increment_adds_and_returns_the_new_value",
    "test_increment_keeps_the_ttl",
    "test_increment_missing_key_starts_at_zero",
    "test_increment_with_ttl_counts_and_expires",
    "test_increment_with_ttl_never_extends_the_ttl",
    "test_initialize_after_close_works_again",
    "test_initialize_is_idempotent",
    "test_kit_tests_are_not_overridden",
    "test_lease_concurrent_takes_never_exceed_the_limit",
    "test_lease_expired_leases_free_their_slots",
    "test_lease_release_frees_the_slot_once",
    "test_lease_renewal_keeps_a_slot_past_its_first_expiry",
    "test_lease_take_admits_up_to_the_limit_then_refuses",
    "test_lease_taken_again_by_its_holder_is_renewed_not_counted",
    "test_lease_takes_racing_between_instances_never_exceed_the_limit",
    "test_lease_unsupported_backend_says_so",
    "test_lock_blocking_timeout_raises_lock_timeout_error",
    "test_lock_excludes_across_instances",
    "test_lock_excludes_concurrent_tasks",
    "test_lock_handle_cannot_release_a_lock_it_does_not_hold",
    "test_lock_is_released_on_exit",
    "test_lock_non_blocking_raises_when_held",
    "test_lock_release_timeout_frees_a_stuck_holder",
    "test_lock_waiter_gets_the_lock_when_released",
    "test_locks_with_different_names_do_not_exclude",
    "test_multi_get_returns_values_in_order",
    "test_multi_get_without_keys_returns_an_empty_list",
    "test_peek_charges_nothing",
    "test_refund_never_leaves_more_than_the_full_quota",
    "test_reset_clears_decision_state",
    "test_reset_clears_only_its_namespace",
    "test_reset_spares_another_namespace_on_the_same_server",
    "test_server_clock_ignores_the_local_clock",
    "test_set_replaces_the_value",
    "test_set_then_get_returns_the_string",
    "test_set_with_expire_expires",
    "test_set_without_expire_clears_a_previous_ttl",
    "test_state_is_shared_between_instances",
    "test_use_after_close_raises_backend_connection_error",
    "test_use_before_initialize_raises_backend_connection_error",
]


def test_kit_test_names_are_stable() -> None:
    names = kit_test_names()
    removed = sorted(set(PUBLIC_TEST_NAMES) - set(names))
    assert not removed, f"kit tests renamed or removed (public API): {removed}"
    assert names == PUBLIC_TEST_NAMES, "a new kit test: add its name to PUBLIC_TEST_NAMES"


def test_kit_async_tests_carry_their_own_asyncio_mark() -> None:
    import inspect

    assert not getattr(BackendConformance, "pytestmark", None), "no class-level marks on the kit"
    for name in kit_test_names():
        func = getattr(BackendConformance, name)
        inner = getattr(getattr(func, "hypothesis", None), "inner_test", func)
        marks = {m.name for m in getattr(func, "pytestmark", ())}
        assert inspect.iscoroutinefunction(inner) == ("asyncio" in marks), name


class _NoNamespaceKit(BackendConformance):
    def make_backend(self) -> InMemoryBackend[typing.Any]:  # type: ignore[override]
        return InMemoryBackend(namespace="ignored")


def test_make_backend_without_namespace_parameter_gets_the_test_namespace() -> None:
    kit = _NoNamespaceKit()
    backend = kit.build_backend()
    assert backend.namespace == kit.kit_namespace()
    assert backend.namespace != _NoNamespaceKit().kit_namespace(), "namespaces must be unique"
    second = kit.build_backend(second=True)
    assert second.namespace == backend.namespace
    assert second is not backend


def test_make_backend_must_return_a_backend() -> None:
    class Wrong(BackendConformance):
        def make_backend(self, namespace: str) -> typing.Any:
            return object()

    with pytest.raises(pytest.fail.Exception, match=r"must return a traffik\.backends\.base"):
        Wrong().build_backend()


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_servers_module_imports_without_the_kit() -> None:
    proc = _run(
        "import sys, traffik.testing.servers; "
        "assert 'pytest' not in sys.modules and 'hypothesis' not in sys.modules"
    )
    assert proc.returncode == 0, proc.stderr


def test_a_missing_test_dependency_names_the_extra() -> None:
    proc = _run(
        "import sys; sys.modules['hypothesis'] = None; "
        "from traffik.testing import BackendConformance"
    )
    assert proc.returncode != 0
    assert "needs hypothesis" in proc.stderr
    assert "traffik-core[testing]" in proc.stderr
