"""hfmed: MedMNIST and MedIMeta as first-class Hugging Face datasets."""

__version__ = "0.1.0"
