"""The traffik example app and the demo that drives it (``hatch run demo``)."""
