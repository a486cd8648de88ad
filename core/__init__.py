"""Leaf modules: facts that the engine, the handlers and run.py all use (the recipe, errors, the history file).
They import nothing from engine/, handlers/ or models/."""
