"""queue stage of a 112 call."""
