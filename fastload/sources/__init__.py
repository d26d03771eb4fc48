"""Things that can be packed: image folders and CSV manifests."""

from .base import Skipped, Source, SourceItem, display_path
from .folder import scan_folder
from .manifest import CsvColumns, scan_csv

__all__ = ["CsvColumns", "Skipped", "Source", "SourceItem", "display_path", "scan_csv", "scan_folder"]
