"""Output: one writer per file format, the stats, the manifest; nothing here decides what goes into a dataset."""
