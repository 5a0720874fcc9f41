"""The quickstart worker."""
