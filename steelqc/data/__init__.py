"""Data layer: RLE masks, image decoding by content, the Severstal layout (local or S3), generators, importers."""
