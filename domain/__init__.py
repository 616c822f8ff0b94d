"""pairgate's domain: the device session aggregate, its rules and its ports.

Pure Python. Nothing here performs I/O or reads a clock; time and randomness come in
as arguments, and the outside world is reached only through the ports in `ports.py`.
"""
