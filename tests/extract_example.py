#!/usr/bin/env python3
"""Writes the C example of README.md (the fenced block after the marker
<!-- example: readme_example.c -->) to OUT.  Usage: extract_example.py README OUT"""
import re
import sys

readme, out = sys.argv[1:3]
text = open(readme).read()
m = re.search(r"<!-- example: readme_example\.c -->\s*```c\n(.*?)```", text, re.S)
if not m:
    sys.exit("README.md has no example block")
with open(out, "w") as f:
    f.write(m.group(1))
