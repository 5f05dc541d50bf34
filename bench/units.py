"""Byte units: the one definition of GiB and MiB (binary, as torch and nvidia-smi report memory)."""

KiB = 1024
MiB = 1024**2
GiB = 1024**3
