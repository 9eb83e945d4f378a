# shellcheck shell=sh
# Shared by the stand-ins for OpenWrt's shell helpers in tests/openwrt/ (no
# OpenWrt counterpart): records one call per line, the function's name and
# its arguments separated by single spaces, in the file named by
# $LANCERT_RECORD (nothing is recorded when it is unset). The tests in
# tests/tests/openwrt.rs read that file to see what the lancert scripts asked
# of procd, UCI, netifd and jshn.
#
# The stand-ins implement only what the lancert scripts use, from OpenWrt's
# documented behaviour; they are not OpenWrt's code.

standin_record() {
	[ -n "${LANCERT_RECORD:-}" ] || return 0
	printf '%s\n' "$*" >>"$LANCERT_RECORD"
}

# standin_fail MESSAGE: a call the stand-ins do not support. Recorded (so a
# test sees it) and printed; the caller returns non-zero.
standin_fail() {
	standin_record "standin-error $*"
	echo "stand-in: $*" >&2
	return 1
}
