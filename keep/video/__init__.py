"""Video input/output for the inference pipeline."""

from .io import Frame, ImageFolderReader, VideoReader, VideoWriter, open_input, probe, read_image, to_rgb, write_image

__all__ = [
    "Frame",
    "ImageFolderReader",
    "VideoReader",
    "VideoWriter",
    "open_input",
    "probe",
    "read_image",
    "to_rgb",
    "write_image",
]
