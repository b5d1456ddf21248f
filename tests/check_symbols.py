#!/usr/bin/env python3
"""The symbols libkwq.so exports == the names kwq.map lists == the functions
kwq.h declares.  Usage: check_symbols.py LIB MAP HEADER"""
import re
import subprocess
import sys

lib, mapfile, header = sys.argv[1:4]

out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True,
                     capture_output=True, text=True).stdout
exported = set()
for line in out.splitlines():
    parts = line.split()
    if len(parts) >= 3 and parts[1] in "TtWwDdBbRrVv":
        exported.add(parts[2].split("@")[0])
exported.discard("KWQ_0.1")

text = open(mapfile).read()
mapped = set(re.findall(r"^\s*(kwq_\w+)\s*;", text, re.M))

src = open(header).read()
src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
src = re.sub(r"//[^\n]*", "", src)
declared = set(re.findall(r"^KWQ_API\b[^;(]*?\b(kwq_\w+)\s*\(", src, re.M))

ok = True
for name, a, b in (("exported vs map", exported, mapped),
                   ("map vs header", mapped, declared)):
    if a != b:
        ok = False
        print(f"{name}: only in first: {sorted(a - b)}; only in second: {sorted(b - a)}")
foreign = sorted(s for s in exported if not s.startswith("kwq_"))
if foreign:
    ok = False
    print("non-kwq symbols exported:", foreign)
print(f"{len(exported)} exported, {len(mapped)} in map, {len(declared)} declared")
sys.exit(0 if ok else 1)
