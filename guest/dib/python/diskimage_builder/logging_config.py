# diskimage_builder.logging_config (vmdib shim): DIB-style logging setup for element scripts that call setup().
import json
import logging
import logging.config
import os


def setup():
    """Log to stderr as "LEVEL name [-] message"; DEBUG when DIB_DEBUG_TRACE > 0, as DIB does."""
    try:
        debug = int(os.environ.get("DIB_DEBUG_TRACE", "0")) > 0
    except ValueError:
        debug = False
    config_file = os.environ.get("DIB_PYTHON_LOGGING_CONFIG_FILE")
    if config_file:
        with open(config_file) as fd:
            logging.config.dictConfig(json.load(fd))
        return
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(levelname)s %(name)s [-] %(message)s",
    )
