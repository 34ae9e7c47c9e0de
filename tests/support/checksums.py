"""CRC32C (Castagnoli, reflected polynomial 0x82F63B78) in pure Python, from its definition.

The format tests check the bytes the C core writes against encoders built on this, so a
checksum is never checked against the code that made it.
"""

from __future__ import annotations


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFFFFFF
