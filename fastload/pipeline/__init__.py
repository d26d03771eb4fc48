"""The DALI backend's machinery: the feed (worker processes reading records into shared-memory
slots), the lowering of ops onto DALI operators, and the engine that runs one pipeline."""
