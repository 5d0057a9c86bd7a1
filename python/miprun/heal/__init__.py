"""Healing: a closed-form map per removed run, fitted on calibration tokens and folded into a kept block."""
