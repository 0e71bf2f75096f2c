#!/bin/bash
# ubuntu-minimal: Ubuntu release, mirror, components, kernel flavour and extra suites (DIB's variables).
export DISTRO_NAME=ubuntu
export DIB_RELEASE=${DIB_RELEASE:-jammy}
export DIB_INIT_SYSTEM=systemd
export EFI_BOOT_DIR="EFI/ubuntu"
export DIB_DEBIAN_COMPONENTS=${DIB_DEBIAN_COMPONENTS:-main,universe}
# No default mirror in vmdib: DIB_UBUNTU_DISTRIBUTION_MIRROR or DIB_DISTRIBUTION_MIRROR must name one; root.d checks
# that it really serves DIB_RELEASE.
if [ -n "${DIB_UBUNTU_DISTRIBUTION_MIRROR:-}" ]; then
  DIB_DISTRIBUTION_MIRROR=$DIB_UBUNTU_DISTRIBUTION_MIRROR
fi
export DIB_DISTRIBUTION_MIRROR=${DIB_DISTRIBUTION_MIRROR:-}
export DIB_UBUNTU_KERNEL=${DIB_UBUNTU_KERNEL:-linux-image-generic}
# Extra suites of the same mirror: <release>-updates, <release>-security, ...
export DIB_UBUNTU_MIRROR_DISTS=${DIB_UBUNTU_MIRROR_DISTS:-"updates,security"}
