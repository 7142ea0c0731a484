"""From a composed Hydra config to objects (build) and the checks that run first (validate)."""
