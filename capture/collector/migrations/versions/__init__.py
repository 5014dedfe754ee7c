"""The collector's schema revisions, oldest first."""
