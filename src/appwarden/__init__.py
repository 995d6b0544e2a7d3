"""appwarden: ban a risky app on the devices that reach your data, and undo a mistake cleanly."""

__version__ = "0.1.0"
