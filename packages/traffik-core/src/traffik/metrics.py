"""OpenTelemetry metrics for traffik, built on :mod:`traffik.events`.

Install the extra (``pip install "traffik-core[opentelemetry]"``, which brings only
``opentelemetry-api``), set up an SDK ``MeterProvider`` with the exporter of your
choice, then::

    from traffik import metrics

    metrics.instrument()  # or instrument(meter_provider=provider)
    ...
    metrics.uninstrument()  # stop recording

The instruments (meter ``traffik``; names follow OpenTelemetry's conventions:
``traffik.`` prefix, dotted lowercase, UCUM units):

=================================  ======================  ==================================
name                               kind, unit              attributes
=================================  ======================  ==================================
``traffik.decisions``              counter, ``{decision}``  ``traffik.throttle``,
                                                           ``traffik.outcome``,
                                                           ``traffik.backend``
``traffik.backend.call.duration``  histogram, ``s``        ``traffik.backend``, ``error.type``
                                                           (failed calls only)
``traffik.backend.calls.active``   up-down, ``{call}``     ``traffik.backend``,
                                                           ``traffik.failure_domain``
``traffik.backend.calls.waiting``  up-down, ``{call}``     same
``traffik.circuit.state``          up-down, ``1``          same, ``traffik.circuit.state``
``traffik.circuit.transitions``    counter, ``{transition}``  same, ``traffik.circuit.state``
``traffik.fallbacks``              counter, ``{answer}``   ``traffik.throttle``,
                                                           ``traffik.backend``,
                                                           ``traffik.action``
``traffik.backend.errors``         counter, ``{error}``    ``traffik.throttle``,
                                                           ``traffik.backend``, ``error.type``
=================================  ======================  ==================================

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
subscriber (one truth test per event) and one global read per backend call.
"""

from __future__ import annotations

import contextvars
import typing

from traffik import _instrument, events

if typing.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

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
#: the cap only guards against a misuse such as a uid per client.
_ATTRIBUTE_CACHE_SIZE = 10_000

#: (key, outcome) set by a FALLBACK or OVERLOAD event, read by the answer's event that
#: follows in the same task: the answer's outcome is then ``policy`` or ``overload``.
_answered_by: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "traffik_metrics_answered_by", default=None
)


def _domain_name(domain: typing.Hashable) -> str:
    return "default" if domain is None or domain == "" else str(domain)


class _Recorder:
    """The instruments of one :func:`instrument` call, and the event subscriber."""

    def __init__(self, provider: MeterProvider | None) -> None:
        from opentelemetry import metrics as otel

        from traffik.__about__ import __version__

        self.provider = provider
        meter = otel.get_meter("traffik", __version__, meter_provider=provider)
        self.decisions = meter.create_counter(
            "traffik.decisions",
            unit="{decision}",
            description="Decisions of throttles, by outcome.",
        )
        self.duration = meter.create_histogram(
            "traffik.backend.call.duration",
            unit="s",
            description="How long backend calls took (guarded backends).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.transitions = meter.create_counter(
            "traffik.circuit.transitions",
            unit="{transition}",
            description="Changes of a failure domain's circuit, by the state entered.",
        )
        self.fallbacks = meter.create_counter(
            "traffik.fallbacks",
            unit="{answer}",
            description="Answers given by the failure policy instead of the backend.",
        )
        self.errors = meter.create_counter(
            "traffik.backend.errors",
            unit="{error}",
            description="Backend calls that failed or timed out.",
        )
        # Observable instruments cannot be removed from a meter: their callbacks
        # report only while this provider is the instrumented one.
        meter.create_observable_up_down_counter(
            "traffik.backend.calls.active",
            callbacks=[_observe(provider, "active")],
            unit="{call}",
            description="Backend calls in flight, per failure domain.",
        )
        meter.create_observable_up_down_counter(
            "traffik.backend.calls.waiting",
            callbacks=[_observe(provider, "waiting")],
            unit="{call}",
            description="Calls waiting for an in-flight slot, per failure domain.",
        )
        meter.create_observable_up_down_counter(
            "traffik.circuit.state",
            callbacks=[_observe(provider, "circuit")],
            unit="1",
            description="1 for the state each failure domain's circuit is in, else 0.",
        )
        self._attributes: dict[tuple[str, ...], Mapping[str, str]] = {}

    def attributes(self, *pairs: str) -> Mapping[str, str]:
        """``{pairs[0]: pairs[1], ...}``, cached."""
        cached = self._attributes.get(pairs)
        if cached is None:
            if len(self._attributes) >= _ATTRIBUTE_CACHE_SIZE:
                self._attributes.clear()
            cached = self._attributes[pairs] = dict(zip(pairs[::2], pairs[1::2], strict=True))
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
            self.decisions.add(
                1,
                self.attributes(
                    "traffik.throttle",
                    event.policy,
                    "traffik.outcome",
                    outcome,
                    "traffik.backend",
                    event.backend,
                ),
            )
        elif kind == events.FALLBACK:
            _answered_by.set((event.key, POLICY))
            self.fallbacks.add(
                1,
                self.attributes(
                    "traffik.throttle",
                    event.policy,
                    "traffik.backend",
                    event.backend,
                    "traffik.action",
                    event.detail,
                ),
            )
        elif kind == events.OVERLOAD:
            _answered_by.set((event.key, OVERLOAD))
        elif kind == events.BACKEND_ERROR:
            self.errors.add(
                1,
                self.attributes(
                    "traffik.throttle",
                    event.policy,
                    "traffik.backend",
                    event.backend,
                    "error.type",
                    type(event.error).__qualname__,
                ),
            )
        elif kind in _TRANSITION_STATE:
            self.transitions.add(
                1,
                self.attributes(
                    "traffik.backend",
                    event.backend,
                    "traffik.failure_domain",
                    _domain_name(event.detail),
                    "traffik.circuit.state",
                    _TRANSITION_STATE[kind],
                ),
            )

    def on_call(self, backend: typing.Any, seconds: float, error: BaseException | None) -> None:
        if error is None:
            attributes = self.attributes("traffik.backend", repr(backend))
        else:
            attributes = self.attributes(
                "traffik.backend", repr(backend), "error.type", type(error).__qualname__
            )
        self.duration.record(seconds, attributes)


_active: _Recorder | None = None


def _observe(
    provider: MeterProvider | None, what: str
) -> typing.Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        recorder = _active
        if recorder is None or recorder.provider is not provider:
            return []
        # Summed per attribute set: two backends may describe themselves alike.
        totals: dict[tuple[str, ...], int] = {}
        for stat in _instrument.guard_stats():
            base = (
                "traffik.backend",
                repr(stat.backend),
                "traffik.failure_domain",
                _domain_name(stat.domain),
            )
            if what == "active":
                totals[base] = totals.get(base, 0) + stat.in_flight
            elif what == "waiting":
                totals[base] = totals.get(base, 0) + stat.waiting
            else:
                for state in _CIRCUIT_STATES:
                    pairs = (*base, "traffik.circuit.state", state)
                    totals[pairs] = totals.get(pairs, 0) + (stat.circuit == state)
        observations = [
            Observation(value, recorder.attributes(*pairs)) for pairs, value in totals.items()
        ]
        return observations

    return callback


def instrument(meter_provider: MeterProvider | None = None) -> None:
    """Record traffik's metrics on ``meter_provider`` (default: the global one).

    Calling it again replaces the previous instrumentation. Raises ``ImportError``
    naming the extra to install when ``opentelemetry-api`` is missing.
    """
    global _active
    try:
        import opentelemetry.metrics  # noqa: F401
    except ImportError:
        raise ImportError(
            "traffik.metrics needs the OpenTelemetry API: "
            "pip install 'traffik-core[opentelemetry]' (and an SDK to export with)."
        ) from None
    uninstrument()
    recorder = _Recorder(meter_provider)
    _active = recorder
    events.subscribe(recorder.on_event)
    _instrument.call_observer = recorder.on_call


def uninstrument() -> None:
    """Stop recording (a no-op when not instrumented). Observable instruments stay
    registered on their meter but report nothing from now on."""
    global _active
    recorder = _active
    if recorder is None:
        return
    _active = None
    events.unsubscribe(recorder.on_event)
    if _instrument.call_observer == recorder.on_call:
        _instrument.call_observer = None


def is_instrumented() -> bool:
    """True between :func:`instrument` and :func:`uninstrument`."""
    return _active is not None
