"""The failure guard: everything :class:`~traffik.failures.FailurePolicy` configures.

:mod:`traffik.failures` is its public face; nothing else imports this package's
modules except :mod:`traffik.backends.base` (the policy it validates, and the
clean-ups of reset and close). The modules import each other one way, from the
bottom up (``tests/test_guard_layers.py`` checks it), and never import
:mod:`traffik.backends`, :mod:`traffik.failures` or anything above them:

- ``types``: what the guard needs of a backend (a protocol, no backend import);
- ``policy``: :class:`FailurePolicy`, its actions and their validation;
- ``circuit``, ``blockcache``, ``inflight``: one piece of state each;
- ``watch``: the deadlines (one sweep per failure domain) and the driver that lets
  a request leave a call at its deadline;
- ``emit``: log records and :mod:`traffik.events`, and the call observers;
- ``answer``: the answers given without the backend (policy, overload);
- ``guard``: :class:`Guard`, one backend's runtime state and its one call path;
- ``registry``: which guard belongs to which backend.
"""
