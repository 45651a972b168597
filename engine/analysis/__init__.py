"""What the engine sees in a frame: the content area (:mod:`~engine.analysis.content_area`,
:mod:`~engine.analysis.tracker`), the model input cut from it (:mod:`~engine.analysis.crop`),
the classifier and the segmenter over a backend, the frame's verdict, and the second pass (a
slower model in its own worker: :mod:`~engine.analysis.second_pass`,
:mod:`~engine.analysis.instances`).

The modules import no inference library: a backend (:mod:`engine.backends`) is handed to them.
"""
