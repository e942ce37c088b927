"""Encryption at rest and compression (REQUIREMENTS E1, E2).

keys.py: the master key and its passphrase slots; passphrase.py: where a passphrase
comes from; aead.py: AES-256-GCM with keys per volume; compress.py: zstd per record;
codec.py: the stored payload of a version-4 record. docs/FORMAT.md documents the bytes.
"""
