"""The read models built from the log; see each module for what it answers."""
