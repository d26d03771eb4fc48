"""Codecs: identify, validate and decode the inputs fastload packs (images, DICOM, JPEG 2000).

``images`` is the entry point (policy and dispatch); ``registry`` lists the codecs (``raster``,
``arrays``, ``dicom``, ``jpeg2000``), each declaring its magic bytes, probe and decode in a
``base.Codec``; ``pixelpolicy`` is the DICOM value policy a kept JPEG 2000 codestream carries.
Imports run one way: base -> pixelpolicy -> codecs -> registry -> images.
"""
