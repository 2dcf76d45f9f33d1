#!/usr/bin/env python3
"""Writes `hello`: a 197-byte static x86-64 Linux program that prints
/app/message.txt. The example image is FROM scratch, so it needs a program
that depends on nothing; this one is small enough to read in full below."""
import struct
import sys

BASE = 0x400000
HEADERS = 64 + 56  # ELF header, one program header

code = bytes.fromhex(
    "b802000000"        # mov eax, 2            open(path, O_RDONLY)
    "488d3d00000000"    # lea rdi, [rip+path]   (patched below)
    "31f6"              # xor esi, esi
    "0f05"              # syscall
    "89c7"              # mov edi, eax          read(fd, rsp-4096, 4096)
    "4881ec00100000"    # sub rsp, 4096
    "4889e6"            # mov rsi, rsp
    "ba00100000"        # mov edx, 4096
    "31c0"              # xor eax, eax
    "0f05"              # syscall
    "89c2"              # mov edx, eax          write(1, buf, n)
    "bf01000000"        # mov edi, 1
    "b801000000"        # mov eax, 1
    "0f05"              # syscall
    "b83c000000"        # mov eax, 60           exit(0)
    "31ff"              # xor edi, edi
    "0f05"              # syscall
)
path = b"/app/message.txt\0"
lea_end = 5 + 7  # the lea's displacement counts from the next instruction
code = bytearray(code)
code[8:12] = struct.pack("<i", len(code) - lea_end)
program = bytes(code) + path
size = HEADERS + len(program)

elf = struct.pack(
    "<4sBBBBB7sHHIQQQIHHHHHH",
    b"\x7fELF", 2, 1, 1, 0, 0, b"\0" * 7,  # 64-bit, little-endian, SysV
    2, 0x3E, 1,                            # executable, x86-64, version
    BASE + HEADERS, 64, 0,                 # entry, program headers, no sections
    0, 64, 56, 1, 0, 0, 0,
)
phdr = struct.pack(
    "<IIQQQQQQ",
    1, 5,                                  # PT_LOAD, read + execute
    0, BASE, BASE, size, size, 0x1000,
)
out = sys.argv[1] if len(sys.argv) > 1 else "hello"
with open(out, "wb") as f:
    f.write(elf + phdr + program)
