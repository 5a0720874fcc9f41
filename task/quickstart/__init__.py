"""The quickstart: a worker and a taskmaster a newcomer can read in a minute.

Shipped inside the package so ``taskbus quickstart`` works from any directory; the
``quickstart/`` folder of a clone links here.
"""
