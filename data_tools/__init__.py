"""Dataset preparation entry points; each is a thin wrapper over ``spade4d convert`` so the logic lives once."""
