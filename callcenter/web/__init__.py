"""web stage of a 112 call."""
