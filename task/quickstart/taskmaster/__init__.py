"""The quickstart taskmaster."""
