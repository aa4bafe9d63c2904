"""isles_diffseg: diffusion segmentation of the final stroke infarct from ISLES'24 CT perfusion maps."""

__version__ = "0.1.0"
