"""cxr-monai: chest X-ray components and bundles on MONAI."""

__version__ = "0.1.0"
