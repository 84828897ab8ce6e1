"""kontext-receiver: run FLUX.1 Kontext edits through webhooks instead of polling loops."""

__version__ = "0.1.0"
