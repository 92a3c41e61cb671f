#!/usr/bin/env bash
# The original BAAS quickstart (shared/reference/seed.txt), run against a
# baas-server. Its five calls are as written in the original except for the
# added `-H "Authorization: Bearer $TOKEN"` (and the server address, which
# the original hard-coded as localhost:4848). The machine is registered
# through the API first, as auto-enrollment is not part of this quickstart.
#
#   BAAS=http://localhost:4848 TOKEN=$(cat baas-data/admin-token) \
#     rocket-server/tests/quickstart.sh
#
# Needs bash, curl and jq. Exits non-zero at the first check that fails.
set -euo pipefail

BAAS="${BAAS:-localhost:4848}"
TOKEN="${TOKEN:?set TOKEN to an admin token, e.g. the admin-token file of the data directory}"
MAC="${MAC:-52:54:00:d9:71:93}"
IMG="${IMG:-/tmp/image.img}"

fail() { echo "quickstart: $*" >&2; exit 1; }
api() { curl -sS -f -H "Authorization: Bearer $TOKEN" "$@"; }

# A lab machine, registered by an admin.
api -X POST "$BAAS/api/v1/machines" -H 'Content-Type: application/json' \
  -d "{\"mac\": \"$MAC\", \"name\": \"quickstart-vm\"}" >/dev/null

# 1. Create a user.
curl -X POST "$BAAS/user" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"name": "USER", "email": "EMAIL", "role": "user"}'
echo
api "$BAAS/api/v1/users" | jq -e '.[] | select(.name == "USER" and .role == "user")' >/dev/null \
  || fail "the user USER was not created"

# 2. Create an image for it.
UUID=$(curl -X POST "$BAAS/user/USER/image" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"name": "Test image", "DiskUUID": "/dev/sda"}' | jq .UUID | sed 's/\"//g')
[[ "$UUID" =~ ^[0-9a-f-]{36}$ ]] || fail "no image UUID: $UUID"
echo "image $UUID"

# 3. Download its latest version.
curl "$BAAS/image/${UUID}/latest" -H "Authorization: Bearer $TOKEN" --output "$IMG"
[ -s "$IMG" ] || fail "the download is empty"

# Change the image a little.
printf 'BAAS quickstart was here' | dd of="$IMG" bs=1 seek=4096 conv=notrunc status=none

# 4. Upload it as a new version; the reply's 4th word is the version.
VERSION=$(curl -X POST "$BAAS/image/${UUID}" -H "Authorization: Bearer $TOKEN" -H "Content-Type: multipart/form-data" -F "file=@$IMG" | awk '{print $4}')
[[ "$VERSION" =~ ^[0-9]+$ ]] || fail "no version number: $VERSION"
echo "version $VERSION"

# 5. Schedule it on the machine.
curl -X POST "$BAAS/machine/$MAC/boot" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d "{\"Version\": ${VERSION}, \"ImageUUID\": \"${UUID}\", \"update\": false}"
echo

# What the five calls did.
[ "$VERSION" = 1 ] || fail "expected version 1, got $VERSION"
api "$BAAS/api/v1/machines/$MAC/queue" \
  | jq -e --arg img "$UUID" '.[0].state == "queued" and .[0].entries[0].image_id == $img and .[0].entries[0].version == 1 and .[0].entries[0].disk == "/dev/sda" and .[0].entries[0].capture == false' >/dev/null \
  || fail "the job is not in the machine's queue"
api "$BAAS/image/${UUID}/${VERSION}" --output "$IMG.back"
cmp -s "$IMG" "$IMG.back" || fail "version $VERSION does not read back as uploaded"
api "$BAAS/user/USER/images" | jq -e --arg img "$UUID" '.[] | select(.UUID == $img) | .Versions | length == 2' >/dev/null \
  || fail "USER's images do not list both versions"
rm -f "$IMG.back"
echo "quickstart: ok"
