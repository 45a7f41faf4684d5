"""The runner-facing ``StateManager`` API over Chronicle's event store."""
