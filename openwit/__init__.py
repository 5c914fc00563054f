"""OpenWIT: rebuild CLIP's WIT dataset (web image-text pairs) as an Apache Beam pipeline."""

__version__ = "0.1.0"
