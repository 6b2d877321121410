"""The proximity mesh: which peers a daemon links with (pure policy, spec §1.2)."""
