"""The receiver's HTTP interface."""
