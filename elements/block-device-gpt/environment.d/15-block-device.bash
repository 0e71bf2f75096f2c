#!/bin/bash
# block-device-gpt: tells the bootloader element the image has a GPT with a BIOS boot partition (BIOS boot).
if [[ $ARCH == arm64 || $ARCH == aarch64 ]]; then
  echo "block-device-gpt is not supported on $ARCH; use block-device-efi"
  exit 1
fi
export DIB_BLOCK_DEVICE=gpt
