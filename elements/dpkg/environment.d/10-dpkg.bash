#!/bin/bash
# dpkg: DIB_ADD_APT_KEYS names a directory of extra apt keys for the image.
export DIB_ADD_APT_KEYS=${DIB_ADD_APT_KEYS:-}
