"""Video input/output for the inference pipeline."""

from .io import (
    VIDEO_SUFFIXES,
    Frame,
    ImageFolderReader,
    VideoReader,
    VideoWriter,
    is_video,
    open_input,
    probe,
    read_image,
    to_rgb,
    write_image,
)

__all__ = [
    "VIDEO_SUFFIXES",
    "Frame",
    "ImageFolderReader",
    "VideoReader",
    "VideoWriter",
    "is_video",
    "open_input",
    "probe",
    "read_image",
    "to_rgb",
    "write_image",
]
