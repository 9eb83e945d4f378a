# shellcheck shell=sh
# Stand-in for OpenWrt's /lib/functions/procd.sh (package/system/procd): the
# procd calls the lancert init script makes, recorded (lib/standin.sh)
# instead of being sent to procd over ubus, and uci_validate_section, which
# OpenWrt implements there on top of /sbin/validate_data (package ubox).
#
# Test knobs (environment):
#   LANCERT_STANDIN_RUNNING=1       procd_running answers "running"
#   LANCERT_STANDIN_SIGNAL_DELAY=N  procd_send_signal sleeps N seconds
#                                   before it records (a procd that hangs)

# shellcheck source=tests/openwrt/lib/standin.sh
. "${IPKG_INSTROOT}/lib/standin.sh"

procd_lock() { :; }

procd_open_service() { standin_record procd_open_service "$@"; }

# As OpenWrt's: closing the service message is when the script's
# service_triggers run (and the message goes to procd).
procd_close_service() {
	standin_record procd_close_service "$@"
	service_triggers
}

procd_open_instance() { standin_record procd_open_instance "$@"; }
procd_set_param() { standin_record procd_set_param "$@"; }
procd_append_param() { standin_record procd_append_param "$@"; }
procd_close_instance() { standin_record procd_close_instance "$@"; }
procd_add_reload_trigger() { standin_record procd_add_reload_trigger "$@"; }
procd_add_interface_trigger() { standin_record procd_add_interface_trigger "$@"; }
procd_add_reload_interface_trigger() { standin_record procd_add_reload_interface_trigger "$@"; }
procd_kill() { standin_record procd_kill "$@"; }

# OpenWrt calls the validation function with an empty section name, which
# makes validate_data describe the options instead of checking them.
procd_add_validation() {
	standin_record procd_add_validation "$@"
	"$@"
}

procd_running() {
	standin_record procd_running "$@"
	[ "${LANCERT_STANDIN_RUNNING:-0}" = 1 ]
}

# OpenWrt's turns a signal name into its number with `kill -l` (numbers
# differ per architecture) and asks procd over ubus.
procd_send_signal() {
	[ -z "${LANCERT_STANDIN_SIGNAL_DELAY:-}" ] || sleep "$LANCERT_STANDIN_SIGNAL_DELAY"
	standin_record procd_send_signal "$@"
}

# uci_validate_section PACKAGE TYPE SECTION 'option:datatype[:default]'...
#
# As OpenWrt's (validate_data): for each option, sets the shell variable of
# the same name to its value (bool normalized to 0/1; a UCI list's items
# joined by spaces), or to the default when the option is unset; unsets it
# when the value is invalid. Returns non-zero if any value is invalid, and
# then prints one line per option on stderr,
#   PACKAGE.SECTION.OPTION=VALUE validates as DATATYPE with true|false
# (list items as OPTION[i]=...), as validate_data does.
#
# Datatypes supported: bool, string, uinteger, uciname, file, list(T),
# or(...) of the former and of quoted literals. Anything else fails loudly.
uci_validate_section() {
	standin_record uci_validate_section "$@"
	standin_package=$1
	standin_section=$3
	shift 3
	# An empty section name asks for the description only.
	[ -n "$standin_section" ] || return 0
	standin_config_read "$standin_package"
	standin_report=
	standin_bad=0
	for standin_spec in "$@"; do
		standin_split_spec "$standin_spec" || return 1
		# shellcheck disable=SC2154 # set by standin_split_spec
		standin_n=$(standin_config_value "$standin_section" "${standin_opt}__N")
		standin_raw=$(standin_config_value "$standin_section" "$standin_opt")
		if [ -n "$standin_n" ]; then
			standin_joined=
			standin_i=1
			standin_ok=1
			while [ "$standin_i" -le "$standin_n" ]; do
				standin_item=$(standin_config_value "$standin_section" "${standin_opt}__$standin_i")
				if standin_check "$standin_type" "$standin_item"; then
					standin_verdict=true
				else
					standin_verdict=false
					standin_ok=0
				fi
				standin_report="$standin_report$standin_package.$standin_section.${standin_opt}[$((standin_i - 1))]=$standin_item validates as $standin_type with $standin_verdict
"
				standin_joined="${standin_joined:+$standin_joined }$standin_item"
				standin_i=$((standin_i + 1))
			done
			if [ "$standin_ok" = 1 ]; then
				eval "$standin_opt=\$standin_joined"
			else
				unset "$standin_opt"
				standin_bad=1
			fi
		elif [ -n "$standin_raw" ]; then
			if standin_check "$standin_type" "$standin_raw"; then
				standin_verdict=true
				standin_export "$standin_opt" "$standin_type" "$standin_raw"
			else
				standin_verdict=false
				unset "$standin_opt"
				standin_bad=1
			fi
			standin_report="$standin_report$standin_package.$standin_section.$standin_opt=$standin_raw validates as $standin_type with $standin_verdict
"
		else
			# shellcheck disable=SC2154 # set by standin_split_spec
			if [ -n "$standin_default" ]; then
				standin_export "$standin_opt" "$standin_type" "$standin_default"
			else
				unset "$standin_opt"
			fi
			standin_report="$standin_report$standin_package.$standin_section.$standin_opt is unset and defaults to $standin_type $standin_default
"
		fi
	done
	[ "$standin_bad" = 0 ] && return 0
	printf '%s' "$standin_report" >&2
	return 1
}

# standin_split_spec 'option:datatype:default': as validate_data, splits at
# unescaped colons; a third colon ends the default.
standin_split_spec() {
	standin_opt=${1%%:*}
	standin_rest=${1#*:}
	[ "$standin_rest" != "$1" ] || standin_fail "not option:datatype: '$1'" || return 1
	case "$standin_rest" in
	*\\:*) standin_fail "escaped colons are not supported: '$1'" || return 1 ;;
	esac
	standin_type=${standin_rest%%:*}
	standin_default=
	if [ "$standin_type" != "$standin_rest" ]; then
		standin_default=${standin_rest#*:}
		standin_default=${standin_default%%:*}
	fi
}

standin_export() {
	if [ "$2" = bool ]; then
		eval "$1=\$(standin_bool \"\$3\")"
	else
		eval "$1=\$3"
	fi
}

standin_bool() {
	case "$1" in
	0 | off | false | no | disabled) echo 0 ;;
	1 | on | true | yes | enabled) echo 1 ;;
	esac
}

# standin_check DATATYPE VALUE
standin_check() {
	case "$1" in
	bool) [ -n "$(standin_bool "$2")" ] ;;
	string) return 0 ;;
	uinteger) standin_uinteger "$2" ;;
	uciname) case "$2" in '' | *[!A-Za-z0-9_]*) return 1 ;; *) return 0 ;; esac ;;
	file) [ -f "$2" ] ;;
	list\(*\))
		standin_inner=${1#list(}
		standin_inner=${standin_inner%)}
		for standin_word in $2; do
			standin_check "$standin_inner" "$standin_word" || return 1
		done
		;;
	or\(*\))
		standin_alts=${1#or(}
		standin_alts=${standin_alts%)}
		standin_value=$2
		standin_old_ifs=$IFS
		IFS=,
		set -f
		# shellcheck disable=SC2086 # split at the commas
		set -- $standin_alts
		set +f
		IFS=$standin_old_ifs
		for standin_alt in "$@"; do
			case "$standin_alt" in
			\"*\" | \'*\')
				standin_literal=${standin_alt#?}
				[ "${standin_literal%?}" != "$standin_value" ] || return 0
				;;
			*) ! standin_check "$standin_alt" "$standin_value" || return 0 ;;
			esac
		done
		return 1
		;;
	*) standin_fail "datatype '$1' is not supported by the stand-in" ;;
	esac
}

# As validate_data's uinteger: strtoul with base 0 (decimal, 0x hex, 0 octal).
standin_uinteger() {
	case "$1" in
	0[xX]*) case "${1#0[xX]}" in '' | *[!0-9A-Fa-f]*) return 1 ;; esac ;;
	0*) case "$1" in *[!0-7]*) return 1 ;; esac ;;
	'' | *[!0-9]*) return 1 ;;
	esac
}
