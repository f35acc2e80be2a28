"""Registers its modules in MMAction2's registries on import."""
