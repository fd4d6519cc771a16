"""Per-track recording, composite export and case-file archive (issue 5)."""
