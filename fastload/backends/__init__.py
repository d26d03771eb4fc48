"""The Loader's backends: DALI pipelines (``dali_backend``) and PyTorch DataLoader workers
(``torch_backend``), both driven by one ``EpochPlan``."""
