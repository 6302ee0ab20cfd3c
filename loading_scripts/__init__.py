"""One module per collection, installed as ``hfmed.loading_scripts``; see :mod:`hfmed.registry`."""

from hfmed.registry import extra_builder_folders

# collections of one's own (HFMED_COLLECTIONS), importable by name in every process, workers included
__path__.extend(f for f in extra_builder_folders() if f not in __path__)
