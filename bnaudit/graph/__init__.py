"""The graph inspector: audits what training produced, without executing model code."""
