"""Apps run by ``taskbus <name>``: taskmasters, workers and utilities."""
