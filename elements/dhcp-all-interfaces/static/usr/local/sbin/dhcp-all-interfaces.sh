#!/bin/bash
# dhcp-all-interfaces.sh IFACE: gives a wired interface that has no configuration a DHCP stanza and brings it up.
set -eu -o pipefail

iface=${1:?usage: dhcp-all-interfaces.sh INTERFACE}
conf_dir=/etc/network/interfaces.d
conf=$conf_dir/$iface

case "$iface" in
  lo | docker* | veth* | virbr* | br-* | tun* | tap* | wg*) exit 0 ;;
esac
# Already configured (by the image or an earlier boot): leave it to ifupdown.
if grep -qsE "^iface $iface " /etc/network/interfaces "$conf_dir"/*; then
  exit 0
fi
mkdir -p "$conf_dir"
printf 'auto %s\nallow-hotplug %s\niface %s inet dhcp\n' "$iface" "$iface" "$iface" >"$conf"
echo "dhcp-all-interfaces: configured $iface for DHCP"
ifup "$iface"
