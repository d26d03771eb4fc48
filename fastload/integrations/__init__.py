"""Ready glue between fastload and training frameworks (each module imports its framework lazily)."""
