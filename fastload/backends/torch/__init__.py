"""The torch backend: PyTorch DataLoader workers that read a store and run the same ops as the
DALI backend's host stage, for machines without DALI."""
