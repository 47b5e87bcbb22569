"""The built-in recipe files, installed as the package ``hardenctl.recipe_files`` (see pyproject.toml).

Not code: this file only makes the folder a regular package, so ``importlib.resources`` finds the YAMLs in an
editable install (which maps ``hardenctl.recipe_files`` to this folder) and in an installed wheel alike.
"""
