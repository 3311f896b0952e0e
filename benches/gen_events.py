#!/usr/bin/env python3
"""Writes a metadata part of N create events under PARENT to stdout.

gen_events.py N PARENT PREFIX [rego|rego-private]
With `rego`, each event carries its own Rego policy (distinct text per child) that lets
everyone read; with `rego-private`, one that lets only its owner (`root-<i>`) read."""
import json
import sys

n, parent, prefix = int(sys.argv[1]), sys.argv[2], sys.argv[3]
mode = sys.argv[4] if len(sys.argv) > 4 else ""
rego = mode in ("rego", "rego-private")
read = "R if owner\nX if owner\n" if mode == "rego-private" else "R := true\nX := true\n"
events = []
for i in range(n):
    e = {"action": "C", "parentoid": parent, "name": f"{prefix}{i:06d}",
         "security": {"label": "BENCH", "foreground": "#FFFFFF", "background": "#000000"}}
    if rego:
        e["objectpolicy"] = {"rego": (
            f"package p{i}\nimport rego.v1\n"
            f"owner if \"root-{i}\" in input.claims.values.email\n"
            + read +
            "C if owner\nU if owner\nD if owner\nP if owner\n")}
        e["allowpartialpermissions"] = True
    events.append(e)
json.dump(events, sys.stdout)
