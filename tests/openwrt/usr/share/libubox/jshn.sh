# shellcheck shell=sh
# Stand-in for OpenWrt's /usr/share/libubox/jshn.sh (package libubox): builds
# a JSON document with the json_* calls and prints it with json_dump. Unlike
# the rest of the stand-ins it must be exact: its output is what the real
# agent parses in the tests, so strings are escaped as JSON requires
# (quote, backslash, control characters), integers and booleans are checked.
#
# Supported: json_init, json_cleanup, json_add_string, json_add_int,
# json_add_boolean, json_add_object, json_close_object, json_add_array,
# json_close_array, json_dump, json_set_namespace (a no-op). In an array the
# name argument is ignored, as in jshn. Every call is recorded
# (lib/standin.sh).

# shellcheck source=tests/openwrt/lib/standin.sh
. "${IPKG_INSTROOT}/lib/standin.sh"

# The document so far, and one character per open container: o/a while it
# is empty, O/A once it has a member (the next one needs a comma).
STANDIN_JSON=
STANDIN_JSON_OPEN=

# standin_json_quote STRING: prints STRING as a JSON string.
standin_json_quote() {
	STANDIN_JSON_STRING=$1 awk 'BEGIN {
		for (n = 1; n < 32; n++) code[sprintf("%c", n)] = n
		s = ENVIRON["STANDIN_JSON_STRING"]
		out = "\""
		for (i = 1; i <= length(s); i++) {
			c = substr(s, i, 1)
			if (c == "\"") out = out "\\\""
			else if (c == "\\") out = out "\\\\"
			else if (c == "\n") out = out "\\n"
			else if (c == "\t") out = out "\\t"
			else if (c == "\r") out = out "\\r"
			else if (c in code) out = out sprintf("\\u%04x", code[c])
			else out = out c
		}
		printf "%s\"", out
	}'
}

# standin_json_member NAME VALUE-TEXT: appends a member to the innermost
# open container.
standin_json_member() {
	[ -n "$STANDIN_JSON_OPEN" ] || standin_fail "json_add_* outside of json_init" || return 1
	standin_top=${STANDIN_JSON_OPEN#"${STANDIN_JSON_OPEN%?}"}
	standin_rest=${STANDIN_JSON_OPEN%?}
	case "$standin_top" in
	O | A) STANDIN_JSON="$STANDIN_JSON," ;;
	esac
	case "$standin_top" in
	o | O)
		STANDIN_JSON="$STANDIN_JSON$(standin_json_quote "$1"):$2"
		STANDIN_JSON_OPEN="${standin_rest}O"
		;;
	a | A)
		STANDIN_JSON="$STANDIN_JSON$2"
		STANDIN_JSON_OPEN="${standin_rest}A"
		;;
	esac
}

json_init() {
	standin_record json_init "$@"
	STANDIN_JSON='{'
	STANDIN_JSON_OPEN=o
}

json_cleanup() {
	standin_record json_cleanup "$@"
	STANDIN_JSON=
	STANDIN_JSON_OPEN=
}

json_set_namespace() {
	standin_record json_set_namespace "$@"
}

json_add_string() {
	standin_record json_add_string "$@"
	standin_json_member "$1" "$(standin_json_quote "$2")"
}

json_add_int() {
	standin_record json_add_int "$@"
	# Stricter than jshn (which converts with strtoll): a JSON integer, no
	# leading zeros, so that the scripts' own conversion is tested.
	case "${2#-}" in
	'' | *[!0-9]* | 0?*) standin_fail "json_add_int $1: '$2' is not a JSON integer" || return 1 ;;
	esac
	standin_json_member "$1" "$2"
}

json_add_boolean() {
	standin_record json_add_boolean "$@"
	case "$2" in
	1) standin_json_member "$1" true ;;
	0) standin_json_member "$1" false ;;
	*) standin_fail "json_add_boolean $1: '$2' is not 0 or 1" ;;
	esac
}

json_add_object() {
	standin_record json_add_object "$@"
	standin_json_member "${1:-}" '{' && STANDIN_JSON_OPEN="${STANDIN_JSON_OPEN}o"
}

json_add_array() {
	standin_record json_add_array "$@"
	standin_json_member "${1:-}" '[' && STANDIN_JSON_OPEN="${STANDIN_JSON_OPEN}a"
}

# standin_json_close o|a
standin_json_close() {
	standin_top=${STANDIN_JSON_OPEN#"${STANDIN_JSON_OPEN%?}"}
	case "$1$standin_top" in
	oo | oO) STANDIN_JSON="$STANDIN_JSON}" ;;
	aa | aA) STANDIN_JSON="$STANDIN_JSON]" ;;
	*) standin_fail "closing a${1#o} $1 while '$standin_top' is open" || return 1 ;;
	esac
	STANDIN_JSON_OPEN=${STANDIN_JSON_OPEN%?}
}

json_close_object() {
	standin_record json_close_object "$@"
	standin_json_close o
}

json_close_array() {
	standin_record json_close_array "$@"
	standin_json_close a
}

# As jshn's: the whole document, containers still open closed.
json_dump() {
	standin_record json_dump "$@"
	standin_out=$STANDIN_JSON
	standin_open=$STANDIN_JSON_OPEN
	while [ -n "$standin_open" ]; do
		case "$standin_open" in
		*[oO]) standin_out="$standin_out}" ;;
		*) standin_out="$standin_out]" ;;
		esac
		standin_open=${standin_open%?}
	done
	printf '%s\n' "$standin_out"
}
