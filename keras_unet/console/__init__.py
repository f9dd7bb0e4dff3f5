"""What the command line shares: checked argument types, quiet native logs, one-line errors.

TF-free (standard library and numpy only), so every level of the package may use it, and
`keras-unet --help` stays light.
"""
