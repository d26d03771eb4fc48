"""The DALI backend: the feed (worker processes reading records into shared-memory slots), the
lowering of ops onto DALI operators, the engine that runs one pipeline, and the host stage that
runs ops on the loader's threads on the CPU."""
