"""Fuzz targets for every decoder, framer, reassembler and device receive path (see fuzz/README.md)."""
