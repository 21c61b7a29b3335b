"""Random and corrupted binary COPY blocks through the decoder: run under sanitizers.

    python pgcopy_fuzz.py ITERATIONS DIR_WITH_PGCOPY_SO

Blocks are built from valid-looking values for random column codes, then
mutated and truncated; every decode must return or raise ValueError /
ArithmeticError.  The input and every output buffer end right before an
inaccessible page, so reading or writing a byte too far kills the process
(SIGSEGV); tests/test_pgcopy.py also preloads AddressSanitizer and
UndefinedBehaviorSanitizer (signed overflow, misaligned access...).
"""

import ctypes
import mmap
import random
import struct
import sys

sys.path.insert(0, sys.argv[2])
import _pgcopy  # noqa: E402

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_keep = []  # the mappings of the current decode


def guarded(size: int, data: bytes = b"") -> memoryview:
    """size writable bytes that end exactly where an inaccessible page begins."""
    pages = (size + PAGE - 1) // PAGE + 1
    m = mmap.mmap(-1, pages * PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    if _libc.mprotect(base + (pages - 1) * PAGE, PAGE, 0) != 0:
        raise OSError("mprotect failed")
    start = (pages - 1) * PAGE - size
    view = memoryview(m)[start:start + size]
    view[: len(data)] = data
    _keep.append(m)
    return view


def alloc(n: int) -> memoryview:
    return guarded(n)


def row(vals):
    out = struct.pack(">h", len(vals))
    for v in vals:
        out += struct.pack(">i", -1) if v is None else struct.pack(">i", len(v)) + v
    return out


rng = random.Random(1)


def value(code):
    """A field for the code: mostly well formed, NULL one time in ten."""
    if rng.random() < 0.1:
        return None
    if code == "?":
        return bytes([rng.randint(0, 1)])
    if code in "248DTIu":
        return rng.randbytes({"2": 2, "4": 4, "D": 4, "8": 8, "T": 8, "I": 16, "u": 16}[code])
    if code in "sy":
        return rng.randbytes(rng.randint(0, 30))
    if code == "j":
        return b"\x01" + rng.randbytes(rng.randint(0, 20))
    if code in "nN":
        digits = rng.randint(0, 6)
        sign = rng.choice([0, 0x4000, 0xC000, 0xD000, 0xF000, 0x1234])
        head = struct.pack(">hhHH", digits, rng.randint(-3, 5), sign, rng.randint(0, 12))
        return head + b"".join(struct.pack(">H", rng.randint(0, 9999)) for _ in range(digits))
    dims = rng.randint(0, 8)  # "V"
    return struct.pack(">hh", dims, 0) + rng.randbytes(4 * dims)


n_ok = n_err = 0
for _ in range(int(sys.argv[1])):
    codes = "".join(rng.choice(_pgcopy.CODES) for _ in range(rng.randint(1, 6)))
    data = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8 if rng.random() < 0.5 else b""
    for _ in range(rng.randint(0, 5)):
        data += row([value(c) for c in codes])
    if rng.random() < 0.5:
        data += b"\xff\xff"
    data = bytearray(data)
    for _ in range(rng.choice([0, 0, 1, 2, 5])):  # corrupt some bytes
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    if rng.random() < 0.2 and data:  # cut it short
        data = data[: rng.randrange(len(data))]
    params = bytes(rng.choice([0, 1, 2, 38, 40]) if rng.random() < 0.5 else 0 for _ in codes)
    try:
        _pgcopy.decode(guarded(len(data), bytes(data)), codes.encode(), alloc, params)
        n_ok += 1
    except (ValueError, ArithmeticError):
        n_err += 1
    _keep.clear()
print("ok", n_ok, "errors", n_err)
