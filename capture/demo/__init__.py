"""`capture demo`: a bundled game, a scripted player and the whole record-export-verify path."""
