"""lambdarec: a Lambda-architecture platform for real-time personalised recommendations."""

__version__ = "0.1.0"
