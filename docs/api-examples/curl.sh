#!/usr/bin/env bash
# Publish an event to a room with curl.
#   IOCLUSTER_ADMIN_URL=http://127.0.0.1:8081 IOCLUSTER_API_KEY=... ./curl.sh news "hello"
set -euo pipefail
room=$1 text=$2
body=$(printf '{"event":"news","args":[{"text":%s}],"to":{"rooms":[%s]}}' \
  "$(printf '%s' "$text" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')" \
  "$(printf '%s' "$room" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')")
curl -sS --fail-with-body -X POST "$IOCLUSTER_ADMIN_URL/api/v1/publish" \
  -H "Authorization: Bearer $IOCLUSTER_API_KEY" -H 'Content-Type: application/json' \
  -d "$body"
echo
