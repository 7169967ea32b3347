"""OpenTelemetry metrics for traffik, built on :mod:`traffik.events`.

Install the extra (``pip install "traffik-core[opentelemetry]"``, which brings only
``opentelemetry-api``), set up an SDK ``MeterProvider`` with the exporter of your
choice, then::

    from traffik import metrics

    metrics.instrument()  # or instrument(meter_provider=provider)
    ...
    metrics.uninstrument()  # stop recording

The instruments (meter ``traffik``; names follow OpenTelemetry's conventions:
``traffik.`` prefix, dotted lowercase, UCUM units), with their attributes:

- ``traffik.decisions`` (counter, ``{decision}``): ``traffik.throttle``,
  ``traffik.outcome``, ``traffik.backend``;
- ``traffik.backend.call.duration`` (histogram, ``s``): ``traffik.backend``,
  ``traffik.call.outcome`` (``ok``, ``error``, ``timeout``, ``late``, ``cancelled``:
  :data:`traffik.failures.CALL_OUTCOMES`);
- ``traffik.backend.calls.active`` and ``traffik.backend.calls.waiting`` (up-down
  counters, ``{call}``): ``traffik.backend``, ``traffik.failure_domain``;
- ``traffik.circuit.state`` (up-down counter, ``1``) and
  ``traffik.circuit.transitions`` (counter, ``{transition}``): ``traffik.backend``,
  ``traffik.failure_domain``, ``traffik.circuit.state``;
- ``traffik.fallbacks`` (counter, ``{answer}``): ``traffik.throttle``,
  ``traffik.backend``, ``traffik.action``;
- ``traffik.backend.errors`` (counter, ``{error}``): ``traffik.throttle``,
  ``traffik.backend``, ``error.type``.

``traffik.outcome`` is one of :data:`OUTCOMES`: ``admitted``, ``refused``,
``refused_shadow`` (a shadow throttle would have refused; the request went
through), ``policy`` (the failure policy answered, the backend could not) and
``overload`` (this process was behind; refused without counting as a failure).
``traffik.circuit.state`` counts the circuits in each state (per backend and
domain: 1 for the state it is in, 0 for the two others). The backend's call duration, active and waiting calls and circuit state are
recorded for backends with a failure policy (the network backends).

Every attribute is bounded by configuration: throttle uids, backend descriptions
(class, namespace, server addresses), failure domains (server addresses),
policy actions and exception class names. The client's identity and the throttle
key are never recorded.

Uninstrumented, nothing is paid beyond what :mod:`traffik.events` costs with no
subscriber (one truth test per event) and the guard's check for call observers.
"""

from __future__ import annotations

import contextvars
import typing

from traffik import events
from traffik.failures import guard_stats, guarded_backends, observe_backend_calls

if typing.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

    from traffik.failures import BackendCall

__all__ = [
    "ADMITTED",
    "OUTCOMES",
    "OVERLOAD",
    "POLICY",
    "REFUSED",
    "REFUSED_SHADOW",
    "instrument",
    "is_instrumented",
    "uninstrument",
]

#: ``traffik.outcome`` values.
ADMITTED = "admitted"
REFUSED = "refused"
REFUSED_SHADOW = "refused_shadow"
POLICY = "policy"
OVERLOAD = "overload"
OUTCOMES = (ADMITTED, REFUSED, REFUSED_SHADOW, POLICY, OVERLOAD)

#: Histogram buckets (seconds) for backend calls: 50 µs to 2.5 s.
DURATION_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)

_CIRCUIT_STATES = ("closed", "half_open", "open")
_TRANSITION_STATE = {
    events.CIRCUIT_OPEN: "open",
    events.CIRCUIT_HALF_OPEN: "half_open",
    events.CIRCUIT_CLOSED: "closed",
}
_DECISION_KINDS = frozenset((events.ALLOWED, events.THROTTLED, events.SHADOW_THROTTLED))
_PLAIN_OUTCOME = {
    events.ALLOWED: ADMITTED,
    events.THROTTLED: REFUSED,
    events.SHADOW_THROTTLED: REFUSED_SHADOW,
}
#: Attribute dictionaries are cached (they are built from configuration, so few);
#: the cap only bounds the cache if a uid per client were used by mistake.
_ATTRIBUTE_CACHE_SIZE = 10_000

#: (key, outcome) set by a FALLBACK or OVERLOAD event, read by the answer's event that
#: follows in the same task: the answer's outcome is then ``policy`` or ``overload``.
_answered_by: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "traffik_metrics_answered_by", default=None
)


def _domain_name(domain: typing.Hashable) -> str:
    return "default" if domain is None or domain == "" else str(domain)


#: The attribute names of each counter, in the order of its keys' values.
_COUNTERS: dict[str, tuple[str, ...]] = {
    "traffik.decisions": ("traffik.throttle", "traffik.outcome", "traffik.backend"),
    "traffik.fallbacks": ("traffik.throttle", "traffik.backend", "traffik.action"),
    "traffik.backend.errors": ("traffik.throttle", "traffik.backend", "error.type"),
    "traffik.circuit.transitions": (
        "traffik.backend",
        "traffik.failure_domain",
        "traffik.circuit.state",
    ),
}
_COUNTER_DOCS = {
    "traffik.decisions": ("{decision}", "Decisions of throttles, by outcome."),
    "traffik.fallbacks": ("{answer}", "Answers given by the failure policy, not the backend."),
    "traffik.backend.errors": ("{error}", "Backend calls that failed or timed out."),
    "traffik.circuit.transitions": (
        "{transition}",
        "Changes of a failure domain's circuit, by the state entered.",
    ),
}
_GAUGES = {
    "traffik.backend.calls.active": ("{call}", "Backend calls in flight, per failure domain."),
    "traffik.backend.calls.waiting": (
        "{call}",
        "Calls waiting for an in-flight slot, per failure domain.",
    ),
    "traffik.circuit.state": ("1", "Circuits in each state, per failure domain."),
}


class _Recorder:
    """The instruments of one :func:`instrument` call, and the event subscriber.

    Counters are counted here, in plain dicts (an event costs a dict update), and
    handed to the SDK as observable counters when a reader collects: the SDK's
    synchronous ``add`` validates its attributes on every call, which cost more
    than the decision itself. Only the call duration is a synchronous histogram.
    """

    def __init__(self, provider: MeterProvider | None) -> None:
        from opentelemetry import metrics as otel

        from traffik.__about__ import __version__

        self.provider = provider
        meter = otel.get_meter("traffik", __version__, meter_provider=provider)
        self.duration = meter.create_histogram(
            "traffik.backend.call.duration",
            unit="s",
            description="How long backend calls took (backends with a failure policy).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        #: Counter name -> {attribute values: count}.
        self.counts: dict[str, dict[tuple[str, ...], int]] = {name: {} for name in _COUNTERS}
        self.decisions = self.counts["traffik.decisions"]
        self.fallbacks = self.counts["traffik.fallbacks"]
        self.errors = self.counts["traffik.backend.errors"]
        self.transitions = self.counts["traffik.circuit.transitions"]
        # Observable instruments cannot be removed from a meter: after uninstrument()
        # the counters report their last totals and the live gauges nothing.
        for name, (unit, description) in _COUNTER_DOCS.items():
            meter.create_observable_counter(
                name, callbacks=[_observe(self, name)], unit=unit, description=description
            )
        for name, (unit, description) in _GAUGES.items():
            meter.create_observable_up_down_counter(
                name, callbacks=[_observe(self, name)], unit=unit, description=description
            )
        self._attributes: dict[tuple[str, ...], Mapping[str, str]] = {}

    def attributes(self, names: tuple[str, ...], values: tuple[str, ...]) -> Mapping[str, str]:
        """``dict(zip(names, values))``, cached (attribute values come from configuration)."""
        key = names + values
        cached = self._attributes.get(key)
        if cached is None:
            if len(self._attributes) >= _ATTRIBUTE_CACHE_SIZE:
                self._attributes.clear()
            cached = self._attributes[key] = dict(zip(names, values, strict=True))
        return cached

    def on_event(self, event: events.ThrottleEvent) -> None:
        kind = event.kind
        if kind in _DECISION_KINDS:
            outcome = _PLAIN_OUTCOME[kind]
            pending = _answered_by.get()
            if pending is not None:
                _answered_by.set(None)
                if pending[0] == event.key:
                    outcome = pending[1]
            counts = self.decisions
            key = (event.policy, outcome, event.backend)
        elif kind == events.FALLBACK:
            _answered_by.set((event.key, POLICY))
            counts = self.fallbacks
            key = (event.policy, event.backend, event.detail)
        elif kind == events.OVERLOAD:
            _answered_by.set((event.key, OVERLOAD))
            return
        elif kind == events.BACKEND_ERROR:
            counts = self.errors
            key = (event.policy, event.backend, type(event.error).__qualname__)
        elif kind in _TRANSITION_STATE:
            counts = self.transitions
            key = (event.backend, _domain_name(event.detail), _TRANSITION_STATE[kind])
        else:
            return
        counts[key] = counts.get(key, 0) + 1

    def on_call(self, call: BackendCall) -> None:
        """Record one guarded backend call (:func:`traffik.failures.observe_backend_calls`)."""
        attributes = self.attributes(
            ("traffik.backend", "traffik.call.outcome"), (repr(call.backend), call.outcome)
        )
        self.duration.record(call.seconds, attributes)

    def observe(self, name: str) -> list[Observation]:
        """The current values of instrument ``name``."""
        from opentelemetry.metrics import Observation

        names = _COUNTERS.get(name)
        if names is not None:
            # list() copies at once: the event loop may add keys meanwhile.
            return [
                Observation(value, self.attributes(names, values))
                for values, value in list(self.counts[name].items())
            ]
        # Summed per attribute set: two backends may describe themselves alike.
        totals: dict[tuple[str, ...], int] = {}
        for backend, stat in [(b, st) for b in guarded_backends() for st in guard_stats(b)]:
            base = (repr(backend), _domain_name(stat.domain))
            if name == "traffik.backend.calls.active":
                totals[base] = totals.get(base, 0) + stat.in_flight
            elif name == "traffik.backend.calls.waiting":
                totals[base] = totals.get(base, 0) + stat.waiting
            else:
                for state in _CIRCUIT_STATES:
                    values = (*base, state)
                    totals[values] = totals.get(values, 0) + (stat.circuit == state)
        where = ("traffik.backend", "traffik.failure_domain")
        return [
            Observation(
                value,
                self.attributes(where if len(values) == 2 else _CIRCUIT_ATTRIBUTES, values),
            )
            for values, value in totals.items()
        ]


_CIRCUIT_ATTRIBUTES = ("traffik.backend", "traffik.failure_domain", "traffik.circuit.state")

_active: _Recorder | None = None
#: Stops the active recorder's backend call observer.
_stop_observing: typing.Callable[[], None] | None = None
#: id(meter provider) -> its recorder, kept after uninstrument(): its counters keep
#: their totals (frozen), and instrumenting the same provider again carries on from them.
_recorders: dict[int, _Recorder] = {}


def _observe(
    recorder: _Recorder, name: str
) -> typing.Callable[[CallbackOptions], Iterable[Observation]]:
    live = name in _GAUGES

    def callback(options: CallbackOptions) -> Iterable[Observation]:
        if live and _active is not recorder:
            return []  # the guard's live state is reported only while instrumented
        return recorder.observe(name)

    return callback


def instrument(meter_provider: MeterProvider | None = None) -> None:
    """Record traffik's metrics on ``meter_provider`` (default: the global one).

    Calling it again replaces the previous instrumentation (counters resume where
    they stopped when it is the same provider). Raises ``ImportError``
    naming the extra to install when ``opentelemetry-api`` is missing.
    """
    global _active, _stop_observing
    try:
        import opentelemetry.metrics  # noqa: F401
    except ImportError:
        raise ImportError(
            "traffik.metrics needs the OpenTelemetry API: "
            "pip install 'traffik-core[opentelemetry]' (and an SDK to export with)."
        ) from None
    uninstrument()
    recorder = _recorders.get(id(meter_provider))
    if recorder is None or recorder.provider is not meter_provider:
        recorder = _recorders[id(meter_provider)] = _Recorder(meter_provider)
    _active = recorder
    events.subscribe(recorder.on_event)
    _stop_observing = observe_backend_calls(recorder.on_call)


def uninstrument() -> None:
    """Stop recording (a no-op when not instrumented). The counters keep reporting
    their totals, frozen; the live gauges (calls, circuits) report nothing. Calling
    :func:`instrument` on the same provider again resumes the same counters."""
    global _active, _stop_observing
    recorder = _active
    if recorder is None:
        return
    _active = None
    events.unsubscribe(recorder.on_event)
    if _stop_observing is not None:
        _stop_observing()
        _stop_observing = None


def is_instrumented() -> bool:
    """True between :func:`instrument` and :func:`uninstrument`."""
    return _active is not None
