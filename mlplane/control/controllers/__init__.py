"""Controllers of the built-in kinds: the Job controller and the default scheduler."""
