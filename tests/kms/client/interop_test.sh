#!/usr/bin/env bash
# ctest kms_client_interop_test: starts the real cofferd on a temporary state directory with a
# fresh SoftHSM2 token (scripts/softhsm-token), runs interop_test.py against it — the dataset is
# created over the admin socket, then a record and an attachment go through the data socket —
# runs coffer-client-example against it too, and stops the daemon with SIGTERM (it must exit 0).
#   tests/kms/client/interop_test.sh COFFERD PYTHON_API_DIR SOFTHSM_TOKEN_SCRIPT [CLIENT_EXAMPLE]
# As root the daemon runs as nobody (--user nobody); otherwise as the calling user.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 COFFERD PYTHON_API_DIR SOFTHSM_TOKEN_SCRIPT [EXAMPLE]" >&2; exit 2; }
cofferd=$1
python_dir=$2
token_script=$3
example=${4:-}
here=$(cd "$(dirname "$0")" && pwd)

dir=$(mktemp -d /tmp/coffer-interop.XXXXXX)
chmod 755 "$dir"
pid=""
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

"$token_script" "$dir/hsm" coffer >/dev/null
me=$(id -u)
user_args=()
group_line=""
if [ "$me" -eq 0 ]; then
  user_args=(--user nobody)
  group_line="data_socket_group: \"$(id -gn nobody)\""
fi
cat >"$dir/cofferd.conf" <<CONF
state_directory: "$dir"
data_socket: "data.sock"
admin_socket: "admin.sock"
$group_line
hsm { token_label: "coffer" pin_file: "hsm/user.pin" token_directory: "hsm" }
durability: WAL
access_audit { crash_loss_window_millis: 0 }
grants { principals { uid: $me } datasets: "interop" datasets: "crm" rights: READ rights: WRITE rights: DELETE rights: PSEUDONYMIZE rights: REIDENTIFY }
admins { uid: $me }
# The protocol is under test here, not admin MFA (kms_keyctl_dual_control_test covers that).
mfa { required: false }
CONF
[ "$me" -eq 0 ] && chown -R nobody: "$dir"

env -u SOFTHSM2_CONF "$cofferd" --config "$dir/cofferd.conf" "${user_args[@]}" \
  --ensure-dataset crm 2>"$dir/cofferd.log" &
pid=$!
for _ in $(seq 1200); do
  [ -S "$dir/data.sock" ] && [ -S "$dir/admin.sock" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if ! [ -S "$dir/data.sock" ]; then
  echo "cofferd did not start:" >&2
  cat "$dir/cofferd.log" >&2
  exit 1
fi

status=0
/usr/bin/python3 "$here/interop_test.py" --socket "$dir/data.sock" --admin-socket "$dir/admin.sock" \
  --dataset interop --python-dir "$python_dir" || status=1
if [ -n "$example" ]; then
  "$example" "$dir/data.sock" crm || status=1
fi

kill -TERM "$pid"
if ! wait "$pid"; then
  echo "cofferd did not exit 0 on SIGTERM" >&2
  status=1
fi
pid=""
[ "$status" -eq 0 ] || { echo "--- cofferd log ---" >&2; cat "$dir/cofferd.log" >&2; }
exit "$status"
