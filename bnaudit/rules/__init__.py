"""The rule documents, one per fault; shipped in the package as ``bnaudit.rules``."""
