#!/bin/bash
# debian-minimal: Debian release, mirrors and apt sources (DIB's variables; vmdib's defaults: bookworm, no host names).
export DISTRO_NAME=debian
export DIB_RELEASE=${DIB_RELEASE:-bookworm}
export DIB_INIT_SYSTEM=systemd
export EFI_BOOT_DIR="EFI/debian"

# The mirror: DIB_DEBIAN_DISTRIBUTION_MIRROR, else DIB_DISTRIBUTION_MIRROR (vmdib fills it in from the host's apt
# sources). root.d fails with a hint when there is none.
if [ -n "${DIB_DEBIAN_DISTRIBUTION_MIRROR:-}" ]; then
  DIB_DISTRIBUTION_MIRROR=$DIB_DEBIAN_DISTRIBUTION_MIRROR
fi
export DIB_DISTRIBUTION_MIRROR=${DIB_DISTRIBUTION_MIRROR:-}
_mirror=${DIB_DISTRIBUTION_MIRROR%/}
# Debian mirrors publish the security archive next to the main one: .../debian -> .../debian-security.
if [[ $_mirror == */debian ]]; then
  _security=${_mirror%/debian}/debian-security
else
  _security=${_mirror:+$_mirror-security}
fi
export DIB_DEBIAN_SECURITY_MIRROR=${DIB_DEBIAN_SECURITY_MIRROR:-$_security}
unset _mirror _security

export DIB_DEBIAN_COMPONENTS=${DIB_DEBIAN_COMPONENTS:-main}
export DIB_DEBIAN_COMPONENTS_WS=${DIB_DEBIAN_COMPONENTS//,/ }

# Security suite: <release>-security since bullseye, <release>/updates before.
case "$DIB_RELEASE" in
  jessie | stretch | buster | oldoldstable) _security_suite=$DIB_RELEASE/updates ;;
  *) _security_suite=$DIB_RELEASE-security ;;
esac
DIB_DEBIAN_SECURITY_SUITE=${DIB_DEBIAN_SECURITY_SUITE:-$_security_suite}
unset _security_suite

# DIB_APT_SOURCES_CONF: "name:deb-line" lines, one /etc/apt/sources.list.d/<name>.list each.
if [[ $DIB_RELEASE == testing || $DIB_RELEASE == unstable || $DIB_RELEASE == sid ]]; then
  _sources="default:deb $DIB_DISTRIBUTION_MIRROR $DIB_RELEASE $DIB_DEBIAN_COMPONENTS_WS"
else
  _sources="default:deb $DIB_DISTRIBUTION_MIRROR $DIB_RELEASE $DIB_DEBIAN_COMPONENTS_WS
updates:deb $DIB_DISTRIBUTION_MIRROR $DIB_RELEASE-updates $DIB_DEBIAN_COMPONENTS_WS
security:deb $DIB_DEBIAN_SECURITY_MIRROR $DIB_DEBIAN_SECURITY_SUITE $DIB_DEBIAN_COMPONENTS_WS"
fi
export DIB_APT_SOURCES_CONF=${DIB_APT_SOURCES_CONF:-$_sources}
unset _sources
