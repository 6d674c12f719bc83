"""newsletter: compose, preview and send an email newsletter from Markdown item files."""

__version__ = "0.1.0"
