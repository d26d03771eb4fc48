"""The Loader's backends: DALI pipelines (``backends.dali``) and PyTorch DataLoader workers
(``backends.torch``), both driven by one ``EpochPlan``."""
