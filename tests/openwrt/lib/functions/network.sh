# shellcheck shell=sh
# Stand-in for OpenWrt's /lib/functions/network.sh (package/base-files),
# which asks netifd over ubus. Here a logical interface's devices come from
# the environment:
#   LANCERT_STANDIN_L3_DEVICE_<iface>  network_get_device  (e.g. br-lan)
#   LANCERT_STANDIN_DEVICE_<iface>     network_get_physdev (e.g. eth0)
# Unset: the interface has no such device (down, or unknown), and the
# function fails, as OpenWrt's does.

# shellcheck source=tests/openwrt/lib/standin.sh
. "${IPKG_INSTROOT}/lib/standin.sh"

# standin_network VARIABLE INTERFACE KIND
standin_network() {
	case "$2" in
	'' | *[!A-Za-z0-9_]*) return 1 ;;
	esac
	eval "standin_device=\${LANCERT_STANDIN_${3}_$2:-}"
	# shellcheck disable=SC2154 # set by the eval above
	eval "$1=\$standin_device"
	[ -n "$standin_device" ]
}

network_get_device() {
	standin_record network_get_device "$@"
	standin_network "$1" "$2" L3_DEVICE
}

network_get_physdev() {
	standin_record network_get_physdev "$@"
	standin_network "$1" "$2" DEVICE
}
