"""Codecs: identify, validate and decode the inputs fastload packs (images, DICOM, JPEG 2000)."""
