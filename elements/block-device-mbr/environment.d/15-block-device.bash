#!/bin/bash
# block-device-mbr: tells the bootloader element the image has an MBR partition table (BIOS boot).
if [[ $ARCH == arm64 || $ARCH == aarch64 ]]; then
  echo "block-device-mbr is not supported on $ARCH; use block-device-efi"
  exit 1
fi
export DIB_BLOCK_DEVICE=mbr
