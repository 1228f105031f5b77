"""AURA's config presets: one ``ml_collections`` file per experiment, ``get_config(arg)`` each.

Installed with the package as ``aura.configs`` (``pyproject.toml`` maps this directory), so
``--config`` finds them from any directory after a non-editable install. Each file's docstring
is its run command.
"""
