"""Polyp segmentation: Kvasir-SEG data (folds, COCO), the real-time segmenter, its export and eval.

``data``: Kvasir-SEG matched with HyperKvasir's official 2-fold split, model inputs with the
engine's black-border masking. ``coco``: COCO instance annotations per fold (for MMDetection).
``models``: the real-time networks (a small U-Net, LRASPP-MobileNetV3). ``trainer``: ``endoview
train segment``. ``export``: the ONNX segment bundle. ``evaluate``: the paper's Table 2 metrics.
"""
