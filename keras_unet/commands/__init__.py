"""Subcommands of the `keras-unet` CLI, one module each."""
