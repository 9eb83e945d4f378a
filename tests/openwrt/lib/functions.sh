# shellcheck shell=sh
# Stand-in for OpenWrt's /lib/functions.sh (package/base-files): the UCI
# helpers the lancert scripts use, each call recorded (lib/standin.sh).
#
# config_load reads "$IPKG_INSTROOT/etc/config/<package>" in UCI's file
# syntax (config/option/list lines, which are valid shell calls of the
# functions below), as OpenWrt does with the output of `uci export`.
# Supported: named and anonymous sections, options, lists; config_get (both
# forms), config_get_bool, config_list_foreach, config_foreach, append,
# list_contains.

# shellcheck source=tests/openwrt/lib/standin.sh
. "${IPKG_INSTROOT}/lib/standin.sh"

# Every variable that holds loaded configuration, for standin_config_reset.
STANDIN_CONFIG_VARS=
STANDIN_CONFIG_SECTIONS=
STANDIN_CONFIG_SECTION=
STANDIN_CONFIG_ANONYMOUS=0

# standin_config_set SECTION OPTION VALUE
standin_config_set() {
	standin_name_ok "$1" && standin_name_ok "$2" || return 1
	eval "STANDIN_CONFIG_${1}__${2}=\$3"
	STANDIN_CONFIG_VARS="$STANDIN_CONFIG_VARS STANDIN_CONFIG_${1}__${2}"
}

# standin_name_ok NAME: a section or option name usable in a variable name.
standin_name_ok() {
	case "$1" in
	'' | *[!A-Za-z0-9_]*) standin_fail "not a UCI name: '$1'" ;;
	*) return 0 ;;
	esac
}

standin_config_reset() {
	for standin_v in $STANDIN_CONFIG_VARS; do
		unset "$standin_v"
	done
	STANDIN_CONFIG_VARS=
	STANDIN_CONFIG_SECTIONS=
	STANDIN_CONFIG_SECTION=
	STANDIN_CONFIG_ANONYMOUS=0
}

# The UCI file syntax, as shell functions.
config() {
	if [ -n "${2:-}" ]; then
		STANDIN_CONFIG_SECTION=$2
	else
		STANDIN_CONFIG_ANONYMOUS=$((STANDIN_CONFIG_ANONYMOUS + 1))
		STANDIN_CONFIG_SECTION="cfg$STANDIN_CONFIG_ANONYMOUS"
	fi
	STANDIN_CONFIG_SECTIONS="$STANDIN_CONFIG_SECTIONS $STANDIN_CONFIG_SECTION"
	standin_config_set "$STANDIN_CONFIG_SECTION" TYPE "$1"
}

option() {
	standin_config_set "$STANDIN_CONFIG_SECTION" "$1" "$2"
}

list() {
	standin_n=$(standin_config_value "$STANDIN_CONFIG_SECTION" "${1}__N")
	standin_n=$((${standin_n:-0} + 1))
	standin_config_set "$STANDIN_CONFIG_SECTION" "${1}__N" "$standin_n"
	standin_config_set "$STANDIN_CONFIG_SECTION" "${1}__$standin_n" "$2"
	# As in OpenWrt, the option itself holds the items joined by spaces.
	standin_joined=$(standin_config_value "$STANDIN_CONFIG_SECTION" "$1")
	standin_config_set "$STANDIN_CONFIG_SECTION" "$1" "${standin_joined:+$standin_joined }$2"
}

# standin_config_value SECTION OPTION: prints the value (empty if unset).
standin_config_value() {
	eval "printf '%s' \"\${STANDIN_CONFIG_${1}__${2}:-}\""
}

# standin_config_read PACKAGE: loads without recording (also used by the
# stand-in `uci`).
standin_config_read() {
	standin_config_reset
	[ -f "${IPKG_INSTROOT}/etc/config/$1" ] || return 1
	# shellcheck disable=SC1090 # the test's UCI file, in UCI's syntax
	. "${IPKG_INSTROOT}/etc/config/$1"
}

config_load() {
	standin_record config_load "$@"
	standin_config_read "$1"
}

config_get() {
	standin_record config_get "$@"
	if [ $# -le 2 ]; then
		standin_config_value "$1" "$2"
		return 0
	fi
	standin_value=$(standin_config_value "$2" "$3")
	eval "$1=\${standin_value:-\${4:-}}"
}

config_get_bool() {
	standin_record config_get_bool "$@"
	standin_value=$(standin_config_value "$2" "$3")
	case "$standin_value" in
	1 | on | true | yes | enabled) standin_value=1 ;;
	0 | off | false | no | disabled) standin_value=0 ;;
	*) standin_value=${4:-} ;;
	esac
	eval "$1=\$standin_value"
}

config_list_foreach() {
	standin_record config_list_foreach "$@"
	standin_section=$1
	standin_option=$2
	standin_function=$3
	shift 3
	standin_n=$(standin_config_value "$standin_section" "${standin_option}__N")
	standin_i=1
	while [ "$standin_i" -le "${standin_n:-0}" ]; do
		standin_item=$(standin_config_value "$standin_section" "${standin_option}__$standin_i")
		"$standin_function" "$standin_item" "$@"
		standin_i=$((standin_i + 1))
	done
}

config_foreach() {
	standin_record config_foreach "$@"
	standin_function=$1
	standin_type=${2:-}
	shift 2
	for standin_s in $STANDIN_CONFIG_SECTIONS; do
		if [ -z "$standin_type" ] || [ "$(standin_config_value "$standin_s" TYPE)" = "$standin_type" ]; then
			"$standin_function" "$standin_s" "$@"
		fi
	done
}

append() {
	eval "standin_old=\${$1:-}"
	# shellcheck disable=SC2154 # standin_old is set by the eval above
	eval "$1=\"\${standin_old:+\$standin_old\${3:- }}\$2\""
}

list_contains() {
	eval "standin_list=\" \${$1:-} \""
	# shellcheck disable=SC2154 # standin_list is set by the eval above
	case "$standin_list" in
	*" $2 "*) return 0 ;;
	*) return 1 ;;
	esac
}
