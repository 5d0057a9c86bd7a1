"""Leaf helpers every stage shares: progress bars, JSON, versions, devices and dtypes. Imports nothing of miprun."""
