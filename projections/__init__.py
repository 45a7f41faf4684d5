"""The domain event vocabulary, the projection engine and the read models built from the log."""
