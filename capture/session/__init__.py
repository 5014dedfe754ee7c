"""Session bundles: one directory per recording, its manifest, its journals and tables."""
