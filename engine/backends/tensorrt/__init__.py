"""TensorRT backend (TensorRT 10 and 11 Python API, pycuda for memory and streams).

Building is a separate step from running (STYLE.md 4): :mod:`~engine.backends.tensorrt.build`
(``endoview build-engine BUNDLE``) parses the bundle's ONNX, builds a plan for this GPU and
stores it in the plan cache (:mod:`engine.backends.plan_cache`) with a sidecar of its key;
:mod:`~engine.backends.tensorrt.fp16` rewrites the ONNX model to FP16 for TensorRT 11.
:class:`~engine.backends.tensorrt.backend.TensorRTBackend` only loads a plan whose sidecar
matches; :mod:`~engine.backends.tensorrt.cuda` holds the CUDA driver and context,
:mod:`~engine.backends.tensorrt.library` imports TensorRT.

``tensorrt`` and ``pycuda`` are imported only when a function here needs them.
"""
