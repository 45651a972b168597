"""endoview's runtime core: sources, content area, model bundles, backends, pipeline, overlay, export.

Headless and Qt-free. torch, tensorrt and pycuda are imported only inside the backends that use
them, so ``import engine`` needs only numpy, opencv-python-headless, onnxruntime and PyAV.
"""

__version__ = "0.1.0"
