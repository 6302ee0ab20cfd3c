"""hfmed: MedMNIST and MedIMeta as first-class Hugging Face datasets."""

__version__ = "0.1.0"


def _checkout_subpackages() -> None:
    """A checkout on ``sys.path`` without an install: the repository's ``loading_scripts/`` and
    ``dataset_cards/`` become ``hfmed.loading_scripts`` and ``hfmed.dataset_cards``, as installed."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for name in ("loading_scripts", "dataset_cards"):
        full, init = f"{__name__}.{name}", root / name / "__init__.py"
        if full in sys.modules or not init.is_file() or importlib.util.find_spec(full) is not None:
            continue
        spec = importlib.util.spec_from_file_location(full, init, submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)


_checkout_subpackages()
