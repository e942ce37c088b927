"""Parity across devices (REQUIREMENTS K1-K3): a set survives losing any m devices.

codec.py (Reed–Solomon rows), layout.py (columns and rows over a set's volumes),
volume.py (the parity volume format), stripe.py (writing parity and rebuilding columns
over anything with device-like ``read``/``create``). Imports only format, model, errors
and the codec library.
"""
