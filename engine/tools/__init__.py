"""Measuring the engine: the speed benchmark behind ``endoview bench`` (:mod:`~engine.tools.bench`)
and the long-run soak test behind ``endoview soak`` (:mod:`~engine.tools.soak`)."""
