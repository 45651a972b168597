"""Training, trimming and export of the models endoview runs (torch, torchvision, mmdet)."""
