#!/usr/bin/env python3
"""Publish an event to a room from Python (standard library only).

    IOCLUSTER_ADMIN_URL=http://127.0.0.1:8081 IOCLUSTER_API_KEY=... python3 python.py news hello
"""
import json
import os
import sys
import urllib.request

room, text = sys.argv[1], sys.argv[2]
request = urllib.request.Request(
    os.environ["IOCLUSTER_ADMIN_URL"] + "/api/v1/publish",
    data=json.dumps({"event": "news", "args": [{"text": text}], "to": {"rooms": [room]}}).encode(),
    headers={
        "Authorization": "Bearer " + os.environ["IOCLUSTER_API_KEY"],
        "Content-Type": "application/json",
    },
    method="POST",
)
with urllib.request.urlopen(request) as response:
    print(json.load(response))
