"""Load harnesses behind `make bench`; not part of the packaged service."""
