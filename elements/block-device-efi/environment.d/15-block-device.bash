#!/bin/bash
# block-device-efi: tells the bootloader element the image has a GPT with an EFI system partition (UEFI boot).
if [[ $ARCH == ppc* ]]; then
  echo "block-device-efi is not supported on $ARCH; use block-device-gpt or block-device-mbr"
  exit 1
fi
export DIB_BLOCK_DEVICE=efi
