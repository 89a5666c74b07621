"""The corrected batch norm that the analyzer's fixes point to."""
